package record

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Numeric is an exact decimal as a plain decimal string: canonical (the
// shortest string of its value: 1.50 and 1.5 are both "1.5") for a numeric
// column with a precision, or with the scale it was given, trailing zeros
// included, for an unconstrained numeric column, as PostgreSQL's own input
// keeps it ("1.50" stays 1.50). Record ids hash Canonical, so the scale
// never changes a key's id.
type Numeric string

// Canonical is n without trailing fractional zeros (and without the point
// when nothing is left after it); zero has no sign.
func (n Numeric) Canonical() Numeric {
	s := string(n)
	if strings.IndexByte(s, '.') < 0 {
		return n
	}
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return Numeric(s)
}

// NumericValue lets pgx encode a Numeric in binary: the digits without the
// point, scaled by ten to the minus number of fractional digits.
func (n Numeric) NumericValue() (pgtype.Numeric, error) {
	s := string(n)
	exp := 0
	if i := strings.IndexByte(s, '.'); i >= 0 {
		exp = -(len(s) - i - 1)
		s = s[:i] + s[i+1:]
	}
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return pgtype.Numeric{}, fmt.Errorf("numeric %q is not canonical", string(n))
	}
	return pgtype.Numeric{Int: v, Exp: int32(exp), Valid: true}, nil
}
