package main

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"
)

// The spellings of time that `offsets reset` shares with Kafka's
// kafka-consumer-groups --reset-offsets (checked against Kafka 4.1.1's
// Utils.getDateTime and java.time.Duration.parse; the table is in
// kafkatime_test.go).

// kafkaDatetime is Kafka's yyyy-MM-ddTHH:mm:ss.SSS, its zone optional (none
// is UTC) and written Z, ±hh:mm or ±hh; seconds' fraction optional here.
var kafkaDatetime = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(Z|[+-]\d{2}(?::\d{2})?|[+-]\d{4})?$`)

// parseDatetime reads --to-datetime: RFC 3339, or Kafka's form without a
// zone (UTC) or with an hour-only offset. A fraction is a fraction of a
// second: .5 is 500 ms (Kafka's SimpleDateFormat reads it as 5 ms; with
// three digits, as Kafka writes it, both agree). ±hhmm is refused: Kafka's
// tool reads +0530 as +05:00.
func parseDatetime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	m := kafkaDatetime.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2026-11-02T06:00:00Z) nor Kafka's yyyy-MM-ddTHH:mm:ss.SSS (2026-11-02T06:00:00.000, UTC)", s)
	}
	zone := m[2]
	switch {
	case zone == "":
		zone = "Z"
	case len(zone) == 5 && zone[3] != ':':
		return time.Time{}, fmt.Errorf("%q: write the offset as %s:%s (Kafka's tool reads %s as %s:00)", s, zone[:3], zone[3:], zone, zone[:3])
	case len(zone) == 3:
		zone += ":00"
	}
	t, err := time.Parse(time.RFC3339Nano, m[1]+zone)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: %w", s, err)
	}
	return t, nil
}

// isoDuration is java.time.Duration.parse's grammar: days (24 hours each),
// hours, minutes and seconds with up to nine decimals (point or comma),
// each signed, the whole signed, letters in either case. No years, months
// or weeks.
var isoDuration = regexp.MustCompile(`(?i)^([-+]?)P(?:([-+]?\d+)D)?(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?$`)

// parseDuration reads --by-duration: an ISO 8601 duration as Kafka's tool
// takes it (PT100H, P4DT4H, PT0.5S), or Go's (100h, 90m).
func parseDuration(s string) (time.Duration, error) {
	if body := strings.TrimLeft(s, "+-"); !strings.HasPrefix(body, "P") && !strings.HasPrefix(body, "p") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is neither ISO 8601 (PT100H, P4DT4H, PT0.5S) nor a Go duration (100h, 90m)", s)
		}
		return d, nil
	}
	m := isoDuration.FindStringSubmatch(s)
	if m == nil || (m[2] == "" && m[3] == "") || (m[3] != "" && m[4] == "" && m[5] == "" && m[6] == "") {
		return 0, fmt.Errorf("%q is not an ISO 8601 duration as Kafka takes it: PnDTnHnMn.nS (P4DT4H, PT100H, PT0.5S; no years, months or weeks)", s)
	}
	ns := new(big.Int)
	for i, unit := range map[int]time.Duration{2: 24 * time.Hour, 4: time.Hour, 5: time.Minute, 6: time.Second} {
		if m[i] == "" {
			continue
		}
		n, ok := new(big.Int).SetString(strings.TrimPrefix(m[i], "+"), 10)
		if !ok {
			return 0, fmt.Errorf("%q: %s is not a number", s, m[i])
		}
		ns.Add(ns, n.Mul(n, big.NewInt(int64(unit))))
	}
	if m[7] != "" {
		frac, _ := new(big.Int).SetString((m[7] + "000000000")[:9], 10)
		if strings.HasPrefix(m[6], "-") {
			frac.Neg(frac) // Java gives the fraction the seconds' sign
		}
		ns.Add(ns, frac)
	}
	if m[1] == "-" {
		ns.Neg(ns)
	}
	if !ns.IsInt64() {
		return 0, errors.New(s + " is too long: at most 292 years")
	}
	return time.Duration(ns.Int64()), nil
}
