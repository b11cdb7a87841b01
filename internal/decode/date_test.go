package decode

import (
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

func TestTargetDate(t *testing.T) {
	for _, tc := range []struct {
		zone string
		ts   string // JSON value of the date field
		want string
	}{
		// Berlin springs forward on 2026-03-29 at 01:00Z (02:00 CET → 03:00 CEST).
		{"Europe/Berlin", `"2026-03-28T22:59:59Z"`, "2026-03-28"},
		{"Europe/Berlin", `"2026-03-28T23:00:00Z"`, "2026-03-29"},
		{"Europe/Berlin", `"2026-03-29T00:30:00Z"`, "2026-03-29"}, // 01:30 CET
		{"Europe/Berlin", `"2026-03-29T01:30:00Z"`, "2026-03-29"}, // 03:30 CEST
		{"Europe/Berlin", `"2026-03-29T21:59:59Z"`, "2026-03-29"}, // 23:59:59 CEST
		{"Europe/Berlin", `"2026-03-29T22:30:00Z"`, "2026-03-30"}, // 00:30 CEST; CET would say the 29th
		{"Europe/Berlin", `"2026-03-29T23:30:00+01:00"`, "2026-03-30"},
		// and falls back on 2026-10-25 at 01:00Z.
		{"Europe/Berlin", `"2026-10-24T22:30:00Z"`, "2026-10-25"}, // 00:30 CEST
		{"Europe/Berlin", `"2026-10-25T22:30:00Z"`, "2026-10-25"}, // 23:30 CET
		{"Europe/Berlin", `"2026-10-25T23:00:00Z"`, "2026-10-26"},
		// New York falls back on 2026-11-01 at 06:00Z (02:00 EDT → 01:00 EST).
		{"America/New_York", `"2026-11-01T03:30:00Z"`, "2026-10-31"}, // 23:30 EDT the day before
		{"America/New_York", `"2026-11-01T03:59:59.999999Z"`, "2026-10-31"},
		{"America/New_York", `"2026-11-01T04:00:00Z"`, "2026-11-01"}, // 00:00 EDT
		{"America/New_York", `"2026-11-01T05:30:00Z"`, "2026-11-01"}, // 01:30 EDT
		{"America/New_York", `"2026-11-01T06:30:00Z"`, "2026-11-01"}, // 01:30 EST, the second time
		{"America/New_York", `"2026-11-02T04:30:00Z"`, "2026-11-01"}, // 23:30 EST; EDT would say the 2nd
		{"America/New_York", `"2026-11-02T05:00:00Z"`, "2026-11-02"},
		{"America/New_York", `"2026-10-31T23:30:00-04:00"`, "2026-10-31"},
		{"America/New_York", `"2026-11-01T05:30:00+01:00"`, "2026-11-01"}, // the offset in the string does not matter
		// and springs forward on 2026-03-08 at 07:00Z.
		{"America/New_York", `"2026-03-09T04:30:00Z"`, "2026-03-09"}, // 00:30 EDT; EST would say the 8th
		{"UTC", `"2026-03-29T23:30:00-04:00"`, "2026-03-30"},
		{"UTC", `"2026-03-29T00:00:00+14:00"`, "2026-03-28"},
		// Epoch milliseconds.
		{"Europe/Berlin", `1774738799000`, "2026-03-28"},
		{"Europe/Berlin", `1774738800000`, "2026-03-29"},
		{"Europe/Berlin", `1774823400000`, "2026-03-30"},
		{"America/New_York", `1793503800000`, "2026-10-31"},
		{"America/New_York", `1793593800000`, "2026-11-01"},
		{"America/New_York", `1793595600000`, "2026-11-02"},
		{"UTC", `0`, "1970-01-01"},
		{"UTC", `-1`, "1969-12-31"},
		{"America/New_York", `0`, "1969-12-31"},
		// A bare date names a day, not an instant: taken as is in every zone.
		{"Europe/Berlin", `"2026-03-29"`, "2026-03-29"},
		{"America/New_York", `"2026-03-29"`, "2026-03-29"},
		{"Pacific/Kiritimati", `"2026-11-01"`, "2026-11-01"},
		{"Pacific/Pago_Pago", `"2026-02-28"`, "2026-02-28"},
		{"UTC", `"2028-02-29"`, "2028-02-29"},
	} {
		t.Run(tc.zone+" "+tc.ts, func(t *testing.T) {
			d := NewDecoder(pipeline(t, config.Pipeline{
				Key:     []string{"id"},
				Columns: []config.Column{col("id", "bigint")},
				Date:    config.Date{Field: "meta.ts", TimeZone: tc.zone},
			}))
			_, date, err := d.Decode(nil, []byte(`{"id":1,"meta":{"ts":`+tc.ts+`}}`), record.Position{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if date.String() != tc.want {
				t.Errorf("target date of %s in %s = %s, want %s", tc.ts, tc.zone, date, tc.want)
			}
			if want, _ := record.ParseDate(tc.want); date != want {
				t.Errorf("target date %+v, want %+v", date, want)
			}
		})
	}
}

func TestTargetDateBad(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string
	}{
		{`{"id":1}`, `missing-field: date field "ts": missing or null`},
		{`{"id":1,"ts":null}`, `missing-field: date field "ts": missing or null`},
		{`{"id":1,"ts":"2026-03-29 01:30:00"}`, `wrong-type: date field "ts": "2026-03-29 01:30:00" is not an RFC 3339 timestamp`},
		{`{"id":1,"ts":"2026-03-29T01:30:00"}`, `wrong-type: date field "ts": "2026-03-29T01:30:00" is not an RFC 3339 timestamp`},
		{`{"id":1,"ts":"2026-02-30T00:00:00Z"}`, `wrong-type: date field "ts": "2026-02-30T00:00:00Z" is not an RFC 3339 timestamp`},
		{`{"id":1,"ts":"yesterday"}`, `wrong-type: date field "ts": "yesterday" is not an RFC 3339 timestamp`},
		{`{"id":1,"ts":""}`, `wrong-type: date field "ts": "" is not an RFC 3339 timestamp`},
		{`{"id":1,"ts":"2026-02-30"}`, `wrong-type: date field "ts": "2026-02-30" is not a date: day out of range`},
		{`{"id":1,"ts":"2026-13-01"}`, `wrong-type: date field "ts": "2026-13-01" is not a date: month out of range`},
		{`{"id":1,"ts":"29.03.2026"}`, `wrong-type: date field "ts": "29.03.2026" is not a date (YYYY-MM-DD) or an RFC 3339 timestamp`},
		{`{"id":1,"ts":1.5}`, `wrong-type: date field "ts": "1.5" is not integer epoch milliseconds`},
		{`{"id":1,"ts":1e30}`, `wrong-type: date field "ts": "1e30" is not integer epoch milliseconds`},
		{`{"id":1,"ts":true}`, `wrong-type: date field "ts": a boolean is not a timestamp`},
		{`{"id":1,"ts":{"at":1}}`, `wrong-type: date field "ts": an object is not a timestamp`},
		{`{"id":1,"ts":[1]}`, `wrong-type: date field "ts": an array is not a timestamp`},
	} {
		t.Run(tc.value, func(t *testing.T) {
			d := NewDecoder(pipeline(t, config.Pipeline{
				Key:     []string{"id"},
				Columns: []config.Column{col("id", "bigint")},
				Date:    config.Date{Field: "ts", TimeZone: "Europe/Berlin"},
			}))
			_, date, err := d.Decode(nil, []byte(tc.value), record.Position{})
			if err == nil {
				t.Fatalf("Decode gave date %s, want an error", date)
			}
			if got := badReason(t, err); !strings.HasPrefix(got, tc.want) {
				t.Errorf("reason %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

func TestDate(t *testing.T) {
	d, err := record.ParseDate("2026-03-29")
	if err != nil || d != (record.Date{Year: 2026, Month: time.March, Day: 29}) {
		t.Fatalf("ParseDate = %+v, %v", d, err)
	}
	if got, want := d.Time(), time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("Time() = %s, want %s", got, want)
	}
	if got := (record.Date{}).String(); got != "undated" || !(record.Date{}).IsZero() || d.IsZero() {
		t.Errorf("zero Date: String %q, IsZero %v; IsZero of %s = %v", got, (record.Date{}).IsZero(), d, d.IsZero())
	}
	if got := (record.Date{Year: 7, Month: time.January, Day: 2}).String(); got != "0007-01-02" {
		t.Errorf("String() = %q, want zero-padded 0007-01-02", got)
	}
	if got := record.DateOf(time.Date(2026, 11, 1, 23, 30, 0, 0, time.FixedZone("x", -5*3600))); got != (record.Date{Year: 2026, Month: time.November, Day: 1}) {
		t.Errorf("DateOf uses the time's own location: got %s", got)
	}
}
