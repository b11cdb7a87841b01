package decode

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// object is a decoded JSON object's top level, as raw values of the
// members the decoder reads; the rest is skipped unparsed.
type object struct {
	d    *Decoder
	raws [][]byte // by d.tops' numbers; nil: no such member
}

// scan checks value is one JSON object with valid text and nothing after
// it (checkJSON), and finds the members the decoder reads. The object it
// returns is the decoder's own, overwritten by the next scan: a Decoder
// decodes one record at a time.
func (d *Decoder) scan(value []byte) (*object, error) {
	o := &d.obj
	clear(o.raws)
	if d.walk(value, o.raws) {
		return o, nil
	}
	// walk refuses exactly what checkJSON refuses (FuzzWalk); checkJSON
	// says why, in the words the dead letters have always used.
	if err := checkJSON(value); err != nil {
		return nil, err
	}
	clear(o.raws)
	k := 0
	eachMember(value[skipSpace(value, 0):], func(key, raw []byte) {
		d.member(o.raws, k, key, raw)
		k++
	})
	return o, nil
}

// member keeps raw, the value of the k-th top-level member, named key
// (still escaped), if the decoder reads it; a later duplicate wins, as it
// does for encoding/json.
func (d *Decoder) member(raws [][]byte, k int, key, raw []byte) {
	if k < len(d.order) {
		if idx := d.order[k]; idx >= 0 && d.names[idx] == string(key) {
			raws[idx] = raw
			return
		}
	}
	idx, ok := d.tops[string(key)]
	if !ok && bytes.IndexByte(key, '\\') >= 0 {
		idx, ok = d.tops[unquote(key)]
	}
	if !ok {
		idx = -1
	}
	if k < len(d.order) {
		d.order[k] = idx
	}
	if ok {
		raws[idx] = raw
	}
}

// lookup returns the value at path as encoding/json would decode it with
// UseNumber into an any.
func (o *object) lookup(path []string) (any, bool) {
	raw := o.raw(o.d.tops[path[0]], path)
	if raw == nil {
		return nil, false
	}
	return toAny(raw), true
}

// raw returns the raw JSON value at path, or nil if there is none; top is
// path[0]'s number in tops.
func (o *object) raw(top int, path []string) []byte {
	raw := o.raws[top]
	if raw == nil {
		return nil
	}
	for _, p := range path[1:] {
		if raw[0] != '{' {
			return nil
		}
		var found []byte
		eachMember(raw, func(key, v []byte) {
			if string(key) == p || (bytes.IndexByte(key, '\\') >= 0 && unquote(key) == p) {
				found = v
			}
		})
		if found == nil {
			return nil
		}
		raw = found
	}
	return raw
}

func unquote(key []byte) string {
	var k string
	_ = json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k)
	return k
}

// toAny converts one valid raw JSON value.
func toAny(raw []byte) any {
	switch raw[0] {
	case '"':
		body := raw[1 : len(raw)-1]
		if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
			return string(body)
		}
		var s string
		_ = json.Unmarshal(raw, &s)
		return s
	case 't':
		return true
	case 'f':
		return false
	case 'n':
		return nil
	case '{', '[':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		_ = dec.Decode(&v)
		return v
	}
	return json.Number(raw)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// eachMember calls fn with the key (still escaped) and raw value of each
// member of the valid JSON object obj, which starts with '{'.
func eachMember(obj []byte, fn func(key, raw []byte)) {
	i := skipSpace(obj, 1)
	if obj[i] == '}' {
		return
	}
	for {
		ke := stringEnd(obj, i)
		key := obj[i+1 : ke-1]
		i = skipSpace(obj, ke) + 1 // past ':'
		i = skipSpace(obj, i)
		ve := valueEnd(obj, i)
		fn(key, obj[i:ve])
		i = skipSpace(obj, ve)
		if obj[i] != ',' {
			return
		}
		i = skipSpace(obj, i+1)
	}
}

// stringEnd returns the index after the string starting at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexAny(b[j:], "\"\\")
		j += k
		if b[j] == '\\' {
			j += 2
			continue
		}
		return j + 1
	}
}

// valueEnd returns the index after the valid value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; {
			switch b[j] {
			case '"':
				j = stringEnd(b, j)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
			j++
		}
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j
		}
		j++
	}
	return j
}
