package record

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Numeric is an exact decimal in canonical form: the shortest decimal string
// of its value (1.50 and 1.5 are both "1.5"), as staged and as hashed.
type Numeric string

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
