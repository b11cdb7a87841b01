package pgtest

import "testing"

func TestContainersWanted(t *testing.T) {
	for _, tc := range []struct {
		v       string
		want    bool
		wantErr string
	}{
		{v: "", want: false},
		{v: "0", want: false},
		{v: "false", want: false},
		{v: "1", want: true},
		{v: "true", want: true},
		{v: "yes", wantErr: `IDEMSINK_TESTCONTAINERS="yes": want a boolean, 1 or 0`},
	} {
		t.Setenv(EnvContainers, tc.v)
		got, err := containersWanted()
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%q: err = %v, want %s", tc.v, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %v, %v; want %v", tc.v, got, err, tc.want)
		}
	}
}
