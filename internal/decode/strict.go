package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/idemsink/idemsink/internal/record"
)

// checkSize refuses a record over the pipeline's max_record_bytes before
// anything reads it.
func (d *Decoder) checkSize(key, value []byte) error {
	limit := int64(d.p.MaxRecordBytes)
	if n := int64(len(key) + len(value)); limit > 0 && n > limit {
		return bad(record.ClassOversize, "record is %d bytes (key %d, value %d), over max_record_bytes %d; not decoded, first %d bytes of key and value kept",
			n, len(key), len(value), limit, record.KeptBytes)
	}
	return nil
}

// checkJSON checks that value is one JSON object with nothing after it and
// with valid text throughout: every string and member name valid UTF-8,
// with no lone surrogate in its escapes. encoding/json would replace either
// with U+FFFD, and two different keys would become one.
func checkJSON(value []byte) error {
	i := skipSpace(value, 0)
	if i == len(value) {
		return bad(record.ClassMalformed, "the value is empty (%d bytes); expected a JSON object", len(value))
	}
	if !json.Valid(value) {
		return syntaxError(value)
	}
	if value[i] != '{' {
		return bad(record.ClassNotObject, "expected a JSON object, got %s", jsonKind(value[i]))
	}
	if utf8.Valid(value) {
		if j := loneSurrogate(value); j >= 0 {
			return bad(record.ClassText, "%s: escape %s at byte %d is a lone UTF-16 surrogate, not a character",
				where(value, j), value[j:j+6], j)
		}
		return nil
	}
	j := 0
	for j < len(value) {
		r, n := utf8.DecodeRune(value[j:])
		if r == utf8.RuneError && n == 1 {
			break
		}
		j += n
	}
	return bad(record.ClassText, "%s: byte 0x%02x at byte %d is not valid UTF-8", where(value, j), value[j], j)
}

// syntaxError explains why value is not JSON, without Go's type names.
func syntaxError(value []byte) error {
	var raw json.RawMessage
	err := json.Unmarshal(value, &raw)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return bad(record.ClassMalformed, "not valid JSON")
	}
	msg := se.Error()
	switch {
	case strings.Contains(msg, "after top-level value"):
		return bad(record.ClassMalformed, "trailing data at byte %d after the JSON value", se.Offset-1)
	case strings.Contains(msg, "unexpected end"):
		return bad(record.ClassMalformed, "the JSON ends unfinished after byte %d", len(value))
	}
	return bad(record.ClassMalformed, "%s at byte %d", msg, se.Offset-1)
}

func jsonKind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// loneSurrogate returns the index of the first \uXXXX escape in a string
// of the valid JSON value v that is half of a UTF-16 pair without its other
// half, or -1.
func loneSurrogate(v []byte) int {
	if !bytes.Contains(v, []byte(`\u`)) {
		return -1
	}
	inString := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			if v[i+1] != 'u' {
				i++ // skip the escaped character, which may be '"' or '\\'
				continue
			}
			r := hex4(v[i+2 : i+6])
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return i
			case r >= 0xD800 && r <= 0xDBFF:
				if i+12 > len(v) || v[i+6] != '\\' || v[i+7] != 'u' {
					return i
				}
				if lo := hex4(v[i+8 : i+12]); lo < 0xDC00 || lo > 0xDFFF {
					return i
				}
				i += 11
				continue
			}
			i += 5
		}
	}
	return -1
}

func hex4(b []byte) rune {
	n, _ := strconv.ParseUint(string(b), 16, 32)
	return rune(n)
}

// where names the place of byte pos in the valid JSON object v: the dotted
// path of the field whose value or member name holds it.
func where(v []byte, pos int) string {
	path, name := "", false
	cur := v[skipSpace(v, 0):]
	at := func(b []byte) int { return cap(v) - cap(b) }
	for {
		var next []byte
		var seg string
		switch cur[0] {
		case '{':
			eachMember(cur, func(key, raw []byte) {
				if next != nil || name {
					return
				}
				if k := at(key); pos >= k-1 && pos <= k+len(key) {
					seg, name = keyText(key), true
					return
				}
				if r := at(raw); pos >= r && pos < r+len(raw) {
					next, seg = raw, keyText(key)
				}
			})
			if name || next != nil {
				path = joinPath(path, seg, false)
			}
		case '[':
			i, idx := skipSpace(cur, 1), 0
			for i < len(cur) && cur[i] != ']' {
				e := valueEnd(cur, i)
				if r := at(cur[i:]); pos >= r && pos < r+e-i {
					next, seg = cur[i:e], strconv.Itoa(idx)
					break
				}
				i = skipSpace(cur, e)
				if i < len(cur) && cur[i] == ',' {
					i = skipSpace(cur, i+1)
				}
				idx++
			}
			if next != nil {
				path = joinPath(path, seg, true)
			}
		}
		if name {
			return fmt.Sprintf("member name of field %s", quoteValue(path))
		}
		if next == nil {
			if path == "" {
				return "the record"
			}
			return fmt.Sprintf("field %s", quoteValue(path))
		}
		cur = next
	}
}

// keyText is a member name for a reason: unescaped, unless it is not
// valid UTF-8, when its bytes are kept for quoteValue to show.
func keyText(key []byte) string {
	if !utf8.Valid(key) {
		return string(key)
	}
	return unquote(key)
}

func joinPath(path, seg string, index bool) string {
	switch {
	case index:
		return path + "[" + seg + "]"
	case path == "":
		return seg
	}
	return path + "." + seg
}

// quoteValue quotes s for a reason: escaped, so that the reason is valid
// UTF-8 whatever s holds, and cut to its start when long, so that a 2 MiB
// value does not make a 2 MiB reason.
func quoteValue(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
