package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      string
		want    []time.Duration
		wantErr string
	}{
		{name: "default", in: "0s,5s,30s,2m,10m,30m,1h,2h", want: defaultRetrySchedule()},
		{name: "decreasing allowed", in: "1h,1s", want: []time.Duration{time.Hour, time.Second}},
		{name: "whitespace", in: "\t1s ,  2s\n", want: []time.Duration{time.Second, 2 * time.Second}},
		{name: "fractional and compound", in: "1.5s,1h2m3s,250us", want: []time.Duration{1500 * time.Millisecond, time.Hour + 2*time.Minute + 3*time.Second, 250 * time.Microsecond}},
		{name: "bare zero", in: "0", want: []time.Duration{0}},
		{name: "empty", in: "", wantErr: "at least one entry required"},
		{name: "blank", in: "  ", wantErr: "at least one entry required"},
		{name: "only comma", in: ",", wantErr: "entry 1 is empty"},
		{name: "bad unit", in: "0s,5s,5x", wantErr: `entry 3 "5x": time: unknown unit "x" in duration "5x"`},
		{name: "overflow", in: "9999999999h", wantErr: `entry 1 "9999999999h": time: invalid duration "9999999999h"`},
		{name: "negative", in: "-1s", wantErr: `entry 1 "-1s": negative`},
		{name: "51 entries", in: strings.Repeat("0s,", 50) + "0s", wantErr: "51 entries, at most 50 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSchedule(tc.in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parseSchedule(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSchedule(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseSchedule(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{
		"0s,5s,30s,2m,10m,30m,1h,2h",
		" 1s , 2s ",
		"0s,5s,5x",
		"-1s",
		"1s,,2s",
		"1.5h",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseSchedule(s)
		if err != nil {
			return
		}
		if len(got) < 1 || len(got) > maxScheduleEntries {
			t.Fatalf("parseSchedule(%q): %d entries", s, len(got))
		}
		parts := make([]string, len(got))
		for i, d := range got {
			if d < 0 {
				t.Fatalf("parseSchedule(%q): negative entry %v", s, d)
			}
			parts[i] = d.String()
		}
		// What the parser accepts it must accept again in canonical form,
		// with the same meaning, and Validate must agree.
		again, err := parseSchedule(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("parseSchedule(%q) = %v, but its canonical form gives %v, %v", s, got, again, err)
		}
		c := Defaults()
		c.RetrySchedule = got
		if err := c.Validate(); err != nil {
			t.Fatalf("parseSchedule(%q) accepted, Validate refused: %v", s, err)
		}
	})
}
