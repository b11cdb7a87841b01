package decode

import "unicode/utf8"

// walk is checkJSON and scan's member search in one pass over value: it
// reports whether value is one JSON object with nothing after it, its
// strings and member names valid UTF-8 without a lone UTF-16 surrogate in
// their escapes, and fills raws with the raw values of the top-level
// members the decoder reads. On false, raws holds nothing reliable and
// checkJSON is left to say what is wrong.
//
// It accepts what encoding/json.Valid accepts, nesting depth included,
// and no more; FuzzWalk holds it to checkJSON.
func (d *Decoder) walk(value []byte, raws [][]byte) bool {
	i := skipSpace(value, 0)
	if i == len(value) || value[i] != '{' {
		return false
	}
	end, ok := walkContainer(value, i, 1, func(k int, key, raw []byte) { d.member(raws, k, key, raw) })
	return ok && skipSpace(value, end) == len(value)
}

// maxDepth is encoding/json's limit on nested objects and arrays: Valid
// refuses a value nested deeper.
const maxDepth = 10000

// walkValue returns the index after the JSON value at b[i], in a container
// at depth, and whether there is a valid one there.
func walkValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return walkString(b, i)
	case c == '{' || c == '[':
		if depth+1 > maxDepth {
			return i, false
		}
		return walkContainer(b, i, depth+1, nil)
	case c == '-' || c >= '0' && c <= '9':
		return walkNumber(b, i)
	case c == 't':
		return walkLiteral(b, i, "true")
	case c == 'f':
		return walkLiteral(b, i, "false")
	case c == 'n':
		return walkLiteral(b, i, "null")
	}
	return i, false
}

// walkContainer walks the object or array at b[i], which is at depth;
// member, if not nil, is called with the number, name (still escaped) and
// raw value of each member of the object.
func walkContainer(b []byte, i, depth int, member func(k int, key, raw []byte)) (int, bool) {
	obj := b[i] == '{'
	closing := byte(']')
	if obj {
		closing = '}'
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == closing {
		return i + 1, true
	}
	for k := 0; ; k++ {
		var ok bool
		var key []byte
		if obj {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			ks := i
			if i, ok = walkString(b, i); !ok {
				return i, false
			}
			key = b[ks+1 : i-1]
			i = skipSpace(b, i)
			if i == len(b) || b[i] != ':' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
		vs := i
		if i, ok = walkValue(b, i, depth); !ok {
			return i, false
		}
		if member != nil {
			member(k, key, b[vs:i])
		}
		i = skipSpace(b, i)
		if i == len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
			continue
		case closing:
			return i + 1, true
		}
		return i, false
	}
}

// plainByte marks the bytes a JSON string holds as they are: not the
// quote, the backslash, a control character or the start of a multi-byte
// UTF-8 sequence.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// walkString returns the index after the JSON string at b[i] == '"' and
// whether it is valid: valid UTF-8, valid escapes, and no \u escape of a
// UTF-16 surrogate other than a high one followed by a low one.
func walkString(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		for j < len(b) && plainByte[b[j]] {
			j++
		}
		if j == len(b) {
			return j, false
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\':
			if j+1 == len(b) {
				return j, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
				continue
			case 'u':
			default:
				return j, false
			}
			r, ok := hexRune(b, j+2)
			switch {
			case !ok || r >= 0xDC00 && r <= 0xDFFF:
				return j, false
			case r >= 0xD800 && r <= 0xDBFF:
				if j+7 >= len(b) || b[j+6] != '\\' || b[j+7] != 'u' {
					return j, false
				}
				if lo, ok := hexRune(b, j+8); !ok || lo < 0xDC00 || lo > 0xDFFF {
					return j, false
				}
				j += 12
				continue
			}
			j += 6
		case c < 0x20:
			return j, false
		default:
			r, n := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && n == 1 {
				return j, false
			}
			j += n
		}
	}
}

// hexRune reads the four hex digits at b[i:].
func hexRune(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		n, ok := hexDigit(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(n)
	}
	return r, true
}

// hexDigit is the value of the hex digit c.
func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// walkNumber returns the index after the JSON number at b[i] and whether
// it is one: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. What follows
// it is the caller's to check.
func walkNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i == len(b):
		return i, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		e := digits(b, i+1)
		if e == i+1 {
			return e, false
		}
		i = e
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		e := digits(b, i)
		if e == i {
			return e, false
		}
		i = e
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func walkLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}
