package record

import "fmt"

// Dates is an inclusive range of target dates, as replay and verify take
// them; the zero Dates is no range.
type Dates struct{ From, To Date }

// ParseDates reads a range from two YYYY-MM-DD dates; an empty to is from.
func ParseDates(from, to string) (Dates, error) {
	var r Dates
	var err error
	if r.From, err = ParseDate(from); err != nil {
		return r, fmt.Errorf("%q is not a date (YYYY-MM-DD)", from)
	}
	r.To = r.From
	if to != "" {
		if r.To, err = ParseDate(to); err != nil {
			return r, fmt.Errorf("%q is not a date (YYYY-MM-DD)", to)
		}
	}
	if r.To.Before(r.From) {
		return r, fmt.Errorf("--to %s is before --from %s", r.To, r.From)
	}
	return r, nil
}

// Has reports whether d lies in r.
func (r Dates) Has(d Date) bool { return !d.Before(r.From) && !r.To.Before(d) }

func (r Dates) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + ".." + r.To.String()
}

// Before reports whether d is an earlier date than e.
func (d Date) Before(e Date) bool { return d.Time().Before(e.Time()) }
