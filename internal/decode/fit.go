package decode

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// valueError is why one value cannot be stored, with its class; Decode
// adds the field and column.
type valueError struct {
	class, msg string
}

func (e *valueError) Error() string { return e.msg }

func wrongType(format string, args ...any) error {
	return &valueError{record.ClassType, fmt.Sprintf(format, args...)}
}

func outOfRange(format string, args ...any) error {
	return &valueError{record.ClassRange, fmt.Sprintf(format, args...)}
}

func badText(format string, args ...any) error {
	return &valueError{record.ClassText, fmt.Sprintf(format, args...)}
}

// classOf is err's class, wrong-type when it has none.
func classOf(err error) string {
	var ve *valueError
	if errors.As(err, &ve) {
		return ve.class
	}
	return record.ClassType
}

// PostgreSQL's timestamptz range: 4713 BC to 294276 AD. A timestamp outside
// it would be refused by the database, or overflow as microseconds.
var (
	minTimestamp = time.Date(-4712, time.January, 1, 0, 0, 0, 0, time.UTC)
	maxTimestamp = time.Date(294277, time.January, 1, 0, 0, 0, 0, time.UTC)
)

func checkTimestamp(t time.Time) error {
	if t.Before(minTimestamp) || !t.Before(maxTimestamp) {
		return outOfRange("%s is outside PostgreSQL's timestamp range (4713 BC to 294276 AD)", t.UTC().Format(time.RFC3339))
	}
	return nil
}

// fitText checks a string for a text-like column: no NUL, which PostgreSQL
// cannot store, and at most the characters varchar(n) or char(n) holds.
// PostgreSQL would cut a value whose excess is spaces; that is a silent
// change too, so it is refused like any other over-long value. A char(n)
// value loses its trailing spaces, which char(n) does not distinguish:
// "ab" and "ab " are one value there, and must be one key here.
func fitText(ct config.ColumnType, s string) (string, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return "", badText("text contains a NUL character at character %d, which PostgreSQL cannot store", utf8.RuneCountInString(s[:i]))
	}
	if ct.Base == "char" {
		s = strings.TrimRight(s, " ")
	}
	if ct.Length > 0 {
		if n := utf8.RuneCountInString(s); n > ct.Length {
			return "", outOfRange("%s is %d characters, longer than %s allows", quoteValue(s), n, ct)
		}
	}
	return s, nil
}

// fitNumeric checks that numeric(p,s) stores n unchanged: no more digits
// after the point than its scale (PostgreSQL would round them away) and no
// more digits in all than its precision (PostgreSQL would refuse it).
func fitNumeric(ct config.ColumnType, n record.Numeric) error {
	if !ct.HasPrecision {
		return nil
	}
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(string(n), "-"), ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return nil // zero fits every numeric
	}
	shift := ct.Scale - len(frac) // digits of n * 10^scale = len(digits) + shift
	if shift < 0 {
		// Exact only if the digits shifted out are zeros; a canonical
		// fraction ends in a non-zero digit, so only whole numbers with
		// a negative scale can be.
		zeros := len(digits) - len(strings.TrimRight(digits, "0"))
		if len(frac) > 0 || zeros < -shift {
			if len(digits)+shift > ct.Precision {
				return outOfRange("%s does not fit %s", quoteValue(string(n)), ct)
			}
			return outOfRange("%s has more digits after the point than %s keeps (scale %d); PostgreSQL would round it",
				quoteValue(string(n)), ct, ct.Scale)
		}
	}
	if len(digits)+shift > ct.Precision {
		return outOfRange("%s does not fit %s", quoteValue(string(n)), ct)
	}
	return nil
}

// fitTime checks that time(p) stores us unchanged.
func fitTime(ct config.ColumnType, us int64) error {
	if ct.HasPrecision && ct.Precision < config.MaxTimestampPrecision && us%pow10(config.MaxTimestampPrecision-ct.Precision) != 0 {
		return outOfRange("%s has more fractional digits than %s keeps; PostgreSQL would round it", formatTimeOfDay(us), ct)
	}
	return nil
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// fitTimestamp checks that timestamptz(p) stores t unchanged. Digits below
// a microsecond are dropped for every timestamptz, as PostgreSQL keeps no
// more; digits a smaller p would round away are refused.
func fitTimestamp(ct config.ColumnType, t time.Time) error {
	if !ct.HasPrecision || ct.Precision >= config.MaxTimestampPrecision {
		return nil
	}
	unit := int64(1)
	for range config.MaxTimestampPrecision - ct.Precision {
		unit *= 10
	}
	if int64(t.Nanosecond()/1000)%unit != 0 {
		return outOfRange("%s has more fractional digits than %s keeps; PostgreSQL would round it", t.Format(time.RFC3339Nano), ct)
	}
	return nil
}
