package main

import (
	"strings"
	"testing"
	"time"
)

// The kafka column is what Kafka 4.1.1 answers for the same text
// (Utils.getDateTime, which kafka-consumer-groups --to-datetime calls, run
// in jshell against the broker's jars); "-" where it refuses it.
func TestParseDatetime(t *testing.T) {
	for _, tc := range []struct{ in, want, kafka, wantErr string }{
		{in: "2026-11-29T12:00:00.000", want: "2026-11-29T12:00:00Z", kafka: "2026-11-29T12:00:00Z"},
		{in: "2026-11-29T12:00:00.000Z", want: "2026-11-29T12:00:00Z", kafka: "2026-11-29T12:00:00Z"},
		{in: "2026-11-29T12:00:00.000+05:30", want: "2026-11-29T06:30:00Z", kafka: "2026-11-29T06:30:00Z"},
		{in: "2026-11-29T12:00:00.000-08:00", want: "2026-11-29T20:00:00Z", kafka: "2026-11-29T20:00:00Z"},
		{in: "2026-11-29T12:00:00.000+05", want: "2026-11-29T07:00:00Z", kafka: "2026-11-29T07:00:00Z"},
		{in: "2026-11-29T12:00:00.000-00:00", want: "2026-11-29T12:00:00Z", kafka: "2026-11-29T12:00:00Z"},
		{in: "2026-11-29T12:00:00.999", want: "2026-11-29T12:00:00.999Z", kafka: "2026-11-29T12:00:00.999Z"},
		// Beyond Kafka: RFC 3339 without a fraction, and Kafka's form
		// without one.
		{in: "2026-11-29T12:00:00Z", want: "2026-11-29T12:00:00Z", kafka: "-"},
		{in: "2026-11-29T12:00:00+05:30", want: "2026-11-29T06:30:00Z", kafka: "-"},
		{in: "2026-11-29T12:00:00", want: "2026-11-29T12:00:00Z", kafka: "-"},
		// Where Kafka's reading is surprising: a fraction here is of a
		// second; Kafka's SimpleDateFormat counts milliseconds.
		{in: "2026-11-29T12:00:00.5", want: "2026-11-29T12:00:00.5Z", kafka: "2026-11-29T12:00:00.005Z"},
		{in: "2026-11-29T12:00:00.000+0530", wantErr: "write the offset as +05:30 (Kafka's tool reads +0530 as +05:00)", kafka: "2026-11-29T07:00:00Z"},
		{in: "2026-11-29T12:00", wantErr: "neither RFC 3339", kafka: "-"},
		{in: "2026-11-29", wantErr: "neither RFC 3339", kafka: "-"},
		{in: "2026-02-30T12:00:00.000", wantErr: "day out of range", kafka: "-"},
		{in: "2026-11-29T24:00:00.000", wantErr: "hour out of range", kafka: "-"},
		{in: "yesterday", wantErr: `"yesterday" is neither RFC 3339`, kafka: "-"},
	} {
		got, err := parseDatetime(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseDatetime(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.UTC().Format(time.RFC3339Nano) != tc.want {
			t.Errorf("parseDatetime(%q) = %v, %v; want %s", tc.in, got.UTC(), err, tc.want)
		}
	}
}

// The kafka column is java.time.Duration.parse's answer (Kafka's
// --by-duration), "-" where it refuses.
func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		kafka   string
		wantErr string
	}{
		{in: "PT100H", want: 100 * time.Hour, kafka: "PT100H"},
		{in: "P4DT4H", want: 100 * time.Hour, kafka: "PT100H"},
		{in: "P4D", want: 96 * time.Hour, kafka: "PT96H"},
		{in: "PT0.5S", want: 500 * time.Millisecond, kafka: "PT0.5S"},
		{in: "PT0,5S", want: 500 * time.Millisecond, kafka: "PT0.5S"},
		{in: "PT1M", want: time.Minute, kafka: "PT1M"},
		{in: "pt1h", want: time.Hour, kafka: "PT1H"},
		{in: "+PT1H", want: time.Hour, kafka: "PT1H"},
		{in: "-PT1H", want: -time.Hour, kafka: "PT-1H"},
		{in: "P-1DT2H", want: -22 * time.Hour, kafka: "PT-22H"},
		{in: "PT-0.5S", want: -500 * time.Millisecond, kafka: "PT-0.5S"},
		{in: "PT1H30M", want: 90 * time.Minute, kafka: "PT1H30M"},
		{in: "PT1.123456789S", want: 1123456789, kafka: "PT1.123456789S"},
		{in: "PT0S", want: 0, kafka: "PT0S"},
		// Go's spellings keep working (Kafka refuses them).
		{in: "100h", want: 100 * time.Hour, kafka: "-"},
		{in: "90m", want: 90 * time.Minute, kafka: "-"},
		{in: "P1Y", wantErr: "no years, months or weeks", kafka: "-"},
		{in: "P1M", wantErr: "no years, months or weeks", kafka: "-"},
		{in: "P1W", wantErr: "no years, months or weeks", kafka: "-"},
		{in: "PT", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "P", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "P1DT", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "PT1.5H", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "P1D1H", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "PT1.1234567891S", wantErr: "not an ISO 8601 duration", kafka: "-"},
		{in: "P200000D", wantErr: "too long", kafka: "PT4800000H"},
		{in: "1x", wantErr: `"1x" is neither ISO 8601`, kafka: "-"},
		{in: "", wantErr: "neither ISO 8601", kafka: "-"},
	} {
		got, err := parseDuration(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseDuration(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
