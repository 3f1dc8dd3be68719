package channels

import (
	"reflect"
	"testing"
)

func TestDecodeStart(t *testing.T) {
	tests := []struct {
		name    string
		out     []string
		want    startReply
		wantErr bool
	}{
		{"gone", []string{"gone"}, startReply{verdict: "gone"}, false},
		{"run", []string{"run", `{"x":1}`, "p1", "3"}, startReply{verdict: "run", task: `{"x":1}`, project: "p1", runs: 3}, false},
		{"done", []string{"done", `{}`, "p1", "success", `{"m":1}`, "", "", "", ""},
			startReply{verdict: "done", task: `{}`, project: "p1", outcome: storedOutcome{status: "success", msg: `{"m":1}`}}, false},
		{"done, event-driven and settled", []string{"done", `{}`, "p1", "ai_generated", "m", "h", "1700000000000", "", "1"},
			startReply{verdict: "done", task: `{}`, project: "p1",
				outcome: storedOutcome{status: "ai_generated", msg: "m", hook: "h", deadline: "1700000000000", beyond: "1"}}, false},
		{"short run", []string{"run", "{}"}, startReply{}, true},
		{"unknown verdict", []string{"later"}, startReply{}, true},
		{"empty", nil, startReply{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeStart(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeStart = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeComplete(t *testing.T) {
	if r := decodeComplete([]any{int64(-1)}); !r.expired {
		t.Errorf("{-1} = %+v, want expired", r)
	}
	r := decodeComplete([]any{int64(0), "error", `{"e":1}`, "", "", "", ""})
	want := completeReply{outcome: storedOutcome{status: "error", msg: `{"e":1}`}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("lost completion = %+v, want %+v", r, want)
	}
	if r := decodeComplete([]any{int64(1), "success", "m", "", "", "", ""}); !r.won || r.outcome.status != "success" {
		t.Errorf("won completion = %+v", r)
	}
}

func TestDecodeCallbackAndFire(t *testing.T) {
	cb := []struct {
		out  []string
		want callbackReply
	}{
		{[]string{"gone"}, callbackReply{verdict: "gone"}},
		{[]string{"foreign"}, callbackReply{verdict: "foreign"}},
		{[]string{"ok", "w", "e", "m", "g", "s", "1"}, callbackReply{verdict: "ok", workflow: "w", event: "e", msg: "m", generated: "g", sim: "s", logged: true}},
		{[]string{"ok", "w", "e", "m", "", "", "1", "1"}, callbackReply{verdict: "ok", workflow: "w", event: "e", msg: "m", logged: true, published: true}},
		{[]string{"repeat", "w", "e", "m", "completed", "1"}, callbackReply{verdict: "repeat", workflow: "w", event: "e", msg: "m", status: "completed", compacted: true}},
		{[]string{"late", "w", "e", "timeout", "m", "error", "g", ""}, callbackReply{verdict: "late", workflow: "w", event: "e", outcome: "timeout", msg: "m", status: "error", generated: "g"}},
		{[]string{"conflict", "w", "e", "completed"}, callbackReply{verdict: "conflict", workflow: "w", event: "e", status: "completed"}},
		{[]string{"not_awaiting", "w", "e", "success"}, callbackReply{verdict: "not_awaiting", workflow: "w", event: "e", status: "success"}},
		{[]string{"timeout", "w", "e"}, callbackReply{verdict: "timeout", workflow: "w", event: "e"}},
		{[]string{"read", "w", "e", "t", "r"}, callbackReply{verdict: "read", workflow: "w", event: "e", task: "t", result: "r"}},
		{[]string{"read"}, callbackReply{verdict: "read"}},
	}
	for _, tt := range cb {
		if got, err := decodeCallback(tt.out); err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("decodeCallback(%q) = %+v, %v; want %+v", tt.out, got, err, tt.want)
		}
	}
	if _, err := decodeCallback([]string{"maybe"}); err == nil {
		t.Error("decodeCallback accepted an unknown verdict")
	}
	fire := []struct {
		out  []string
		want fireReply
	}{
		{[]string{"wait", "1700000000123"}, fireReply{verdict: "wait", deadline: 1700000000123}},
		{[]string{"done", "m", "p1", "callback", "completed", "wf", "ev"},
			fireReply{verdict: "done", msg: "m", project: "p1", outcome: "callback", status: "completed", workflow: "wf", event: "ev"}},
		{[]string{"fired", "m", "p1", "timeout", "error", "wf", "ev", "g", "s"},
			fireReply{verdict: "fired", msg: "m", project: "p1", outcome: "timeout", status: "error", workflow: "wf", event: "ev", generated: "g", sim: "s"}},
		{[]string{"gone"}, fireReply{verdict: "gone"}},
	}
	for _, tt := range fire {
		if got, err := decodeFire(tt.out); err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("decodeFire(%q) = %+v, %v; want %+v", tt.out, got, err, tt.want)
		}
	}
}

// decodeCase is a reply and what a decoder makes of it.
type decodeCase[In any, Out comparable] struct {
	name    string
	out     In
	want    Out
	wantErr bool
}

func checkDecoder[In any, Out comparable](t *testing.T, decode func(In) (Out, error), tests []decodeCase[In, Out]) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("decoded %v as %+v, want %+v", tt.out, got, tt.want)
			}
		})
	}
}

func TestDecodeEnqueue(t *testing.T) {
	checkDecoder(t, decodeEnqueue, []decodeCase[[]int64, enqueueReply]{
		{"queued", []int64{3}, enqueueReply{depth: 3}, false},
		{"deployment full", []int64{-1}, enqueueReply{refused: enqueueQueueFull}, false},
		{"project full", []int64{-2}, enqueueReply{refused: enqueueProjectFull}, false},
		{"rate limited", []int64{-3, 250}, enqueueReply{refused: enqueueRateLimited, waitMS: 250}, false},
		{"rate limited without its wait", []int64{-3}, enqueueReply{}, true},
		{"unknown code", []int64{-4}, enqueueReply{}, true},
		{"empty", nil, enqueueReply{}, true},
	})
}

func TestDecodeIdemClaim(t *testing.T) {
	rec := `{"fingerprint":"f","channel_id":"c","done":true}`
	checkDecoder(t, decodeIdemClaim, []decodeCase[[]any, idemClaimReply]{
		{"reserved", []any{int64(1)}, idemClaimReply{code: idemReserved}, false},
		{"held", []any{int64(0), rec}, idemClaimReply{code: idemHeld, record: rec}, false},
		{"stale", []any{int64(2), rec}, idemClaimReply{code: idemStale, record: rec}, false},
		{"gone", []any{int64(3)}, idemClaimReply{code: idemGone}, false},
		{"held without its record", []any{int64(0)}, idemClaimReply{}, true},
		{"unknown code", []any{int64(4)}, idemClaimReply{}, true},
		{"not a number", []any{"1"}, idemClaimReply{}, true},
		{"empty", nil, idemClaimReply{}, true},
	})
}
