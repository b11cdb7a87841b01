package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Classes of bad input. Every dead-letter reason starts with its class and
// a colon, so that `consumer dlq list --reason invalid-text` finds them all.
const (
	ClassOversize  = "oversize"       // key plus value over max_record_bytes
	ClassTombstone = "tombstone"      // a delete (null value, Debezium op d) not applied, or without a usable key
	ClassMalformed = "malformed-json" // not JSON, truncated, trailing data
	ClassNotObject = "not-an-object"  // JSON, but an array, string, number or null
	ClassText      = "invalid-text"   // invalid UTF-8, a lone surrogate, NUL
	ClassMissing   = "missing-field"  // a required field is absent or null
	ClassType      = "wrong-type"     // a value of the wrong JSON type or syntax
	ClassRange     = "out-of-range"   // does not fit the column's type and modifiers
	ClassRefused   = "refused-by-postgres"
	// Classes of the registry formats and Debezium (format.go).
	ClassPayload = "malformed-payload" // no Confluent wire-format header, or Avro/Protobuf that does not decode
	ClassSchema  = "schema"            // the writer schema is unknown to the registry (404), unusable, or of another format
	ClassEvent   = "debezium-event"    // a Debezium event without its source position, its after row, or a known op
)

// Classes lists every class in the order the README documents them.
var Classes = []string{ClassOversize, ClassTombstone, ClassMalformed, ClassNotObject, ClassText,
	ClassMissing, ClassType, ClassRange, ClassRefused, ClassPayload, ClassSchema, ClassEvent}

// ClassOf returns the class a dead-letter reason starts with, or "".
func ClassOf(reason string) string {
	c, _, ok := strings.Cut(reason, ":")
	if !ok {
		return ""
	}
	for _, k := range Classes {
		if c == k {
			return c
		}
	}
	return ""
}

// KeptBytes is how much of an oversize record's key and value is kept in
// its dead letter: enough to recognise it, not enough to fill the table.
const KeptBytes = 1024

// DeadLetterFor is the dead letter of a record that failed to decode with
// err. An oversize record keeps only its first KeptBytes of key and value;
// its reason gives the full sizes.
func DeadLetterFor(pos Position, key, value []byte, err error) DeadLetter {
	var br *BadRecord
	if errors.As(err, &br) && br.Class == ClassOversize {
		key, value = key[:min(len(key), KeptBytes)], value[:min(len(value), KeptBytes)]
	}
	return DeadLetter{Pos: pos, Key: key, Value: value, Reason: err.Error()}
}

// checkSize refuses a record over the pipeline's max_record_bytes before
// anything reads it.
func (d *Decoder) checkSize(key, value []byte) error {
	limit := int64(d.p.MaxRecordBytes)
	if n := int64(len(key) + len(value)); limit > 0 && n > limit {
		return bad(ClassOversize, "record is %d bytes (key %d, value %d), over max_record_bytes %d; not decoded, first %d bytes of key and value kept",
			n, len(key), len(value), limit, KeptBytes)
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
		return bad(ClassMalformed, "the value is empty (%d bytes); expected a JSON object", len(value))
	}
	if !json.Valid(value) {
		return syntaxError(value)
	}
	if value[i] != '{' {
		return bad(ClassNotObject, "expected a JSON object, got %s", jsonKind(value[i]))
	}
	if utf8.Valid(value) {
		if j := loneSurrogate(value); j >= 0 {
			return bad(ClassText, "%s: escape %s at byte %d is a lone UTF-16 surrogate, not a character",
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
	return bad(ClassText, "%s: byte 0x%02x at byte %d is not valid UTF-8", where(value, j), value[j], j)
}

// syntaxError explains why value is not JSON, without Go's type names.
func syntaxError(value []byte) error {
	var raw json.RawMessage
	err := json.Unmarshal(value, &raw)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return bad(ClassMalformed, "not valid JSON")
	}
	msg := se.Error()
	switch {
	case strings.Contains(msg, "after top-level value"):
		return bad(ClassMalformed, "trailing data at byte %d after the JSON value", se.Offset-1)
	case strings.Contains(msg, "unexpected end"):
		return bad(ClassMalformed, "the JSON ends unfinished after byte %d", len(value))
	}
	return bad(ClassMalformed, "%s at byte %d", msg, se.Offset-1)
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
