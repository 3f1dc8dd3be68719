package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/riverhub/riverhub/internal/wstoken"
)

func TestParseFrame(t *testing.T) {
	s := func(v string) *string { return &v }
	tests := []struct {
		name string
		in   string
		want frame
		err  bool
	}{
		{name: "heartbeat", in: `[null,"3","phoenix","heartbeat",{}]`,
			want: frame{Ref: s("3"), Topic: "phoenix", Event: "heartbeat", Payload: json.RawMessage(`{}`)}},
		{name: "join", in: ` [ "1" , "1" , "ai_response:x" , "phx_join" , {"a": [1]} ] `,
			want: frame{JoinRef: s("1"), Ref: s("1"), Topic: "ai_response:x", Event: "phx_join", Payload: json.RawMessage(`{"a": [1]}`)}},
		{name: "escaped topic", in: `[null,null,"a\u0062","e",{}]`,
			want: frame{Topic: "ab", Event: "e", Payload: json.RawMessage(`{}`)}},
		{name: "not JSON", in: `[`, err: true},
		{name: "empty", in: ``, err: true},
		{name: "object", in: `{}`, err: true},
		{name: "six elements", in: `[null,null,"t","e",{},1]`, err: true},
		{name: "numeric ref", in: `[null,1,"t","e",{}]`, err: true},
		{name: "numeric join_ref", in: `[1,null,"t","e",{}]`, err: true},
		{name: "null topic", in: `[null,null,null,"e",{}]`, err: true},
		{name: "empty event", in: `[null,null,"t","",{}]`, err: true},
		{name: "null payload", in: `[null,null,"t","e",null]`, err: true},
		{name: "string payload", in: `[null,null,"t","e","{}"]`, err: true},
		{name: "trailing garbage", in: `[null,null,"t","e",{}]x`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFrame([]byte(tt.in))
			if tt.err {
				var ef errFrame
				if !errors.As(err, &ef) || len(ef) == 0 || len(ef) > 123 {
					t.Fatalf("err = %v, want an errFrame that fits a close reason", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestPushFrame(t *testing.T) {
	m := &member{}
	m.head, m.tail = pushPrefix(strPtr(`7,null,"`), "ai_response:a<b")
	got := m.frame(entry{seq: 12, payload: `{"x": "</script>"}`})
	want := `["7,null,\"","12","ai_response:a\u003cb","response",{"x": "</script>"}]`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var f []any
	if err := json.Unmarshal(got, &f); err != nil || len(f) != 5 {
		t.Fatalf("not a frame: %v", err)
	}
	m.head, m.tail = pushPrefix(nil, "t")
	if got := string(m.frame(entry{seq: 1, payload: "{}"})); got != `[null,"1","t","response",{}]` {
		t.Fatalf("got %s", got)
	}
}

func TestLastSeq(t *testing.T) {
	for in, want := range map[string]int64{`{"last_seq":3}`: 3, `{}`: 0, `{"last_seq":-1}`: 0, `{"last_seq":"3"}`: 0,
		`{"last_seq":1.5}`: 0, `[]`: 0, `{"last_seq":null}`: 0, `{"other":1,"last_seq":0}`: 0} {
		if got := lastSeq(json.RawMessage(in)); got != want {
			t.Errorf("lastSeq(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestParseEntry(t *testing.T) {
	for _, tt := range []struct {
		in  string
		ok  bool
		seq int64
		p   string
	}{
		{`{"seq":12,"payload":{"a":1}}`, true, 12, `{"a":1}`},
		{`{"seq":1,"payload":{}}`, true, 1, `{}`},
		{`{"seq":0,"payload":{}}`, false, 0, ""},
		{`{"seq":x,"payload":{}}`, false, 0, ""},
		{`{"payload":{},"seq":1}`, false, 0, ""},
		{`{"seq":1,"data":{}}`, false, 0, ""},
	} {
		e, ok := parseEntry(tt.in)
		if ok != tt.ok || ok && (e.seq != tt.seq || e.payload != tt.p) {
			t.Errorf("parseEntry(%s) = %+v, %v", tt.in, e, ok)
		}
	}
}

func TestAuthorizeIsCaseInsensitive(t *testing.T) {
	c := wstoken.Claims{ProjectID: "0b9ee2c5-6c1c-4c1f-9d4e-2f7a3c1b5e6d", ChannelID: "5d0f4a8e-3b2c-4e1a-8f7d-6c9b0a1e2d3f"}
	cid, reason := authorize("ai_response:0B9EE2C5-6C1C-4C1F-9D4E-2F7A3C1B5E6D:5D0F4A8E-3B2C-4E1A-8F7D-6C9B0A1E2D3F", c)
	if reason != "" || cid != c.ChannelID {
		t.Fatalf("got %q %q", cid, reason)
	}
}

// FuzzFrame: the parser never panics, accepts only what it can encode back
// to an equal frame, and rejects with a reason that fits a close frame.
func FuzzFrame(f *testing.F) {
	for _, s := range []string{
		`[null,"1","phoenix","heartbeat",{}]`,
		`["1","1","ai_response:p:c","phx_join",{}]`,
		`["1","2","ai_response:c","phx_leave",{}]`,
		`[null,null,"t","e",{"nested":{"a":[1,2,{"b":null}]}}]`,
		`[1,2,3,4,5]`,
		`{"topic":"phoenix"}`,
		"[\"\xff\",null,\"t\",\"e\",{}]",
		`[null,"1","phoenix","heartbeat",{}`,
		` [ "a\"]" , "\\" ,"t<>&\u2028","e\u00e9" , { "x" : "]}," , "y":[ [ ] , { } ] } ] `,
		`[null,"1","phoenix","heartbeat",{},{}]`,
		`[null,"1","phoenix","heartbeat"]`,
		`[]`, `[[],[],[],[],[]]`, `[null, null, "t", "e", {"s":"</script>"}]`,
		"[null,null,\"t\",\"e\",{\"a\":\"\u2028\"}]",
		`[true,false,"t","e",{}]`, `[null,null,"t","e",{}] `, "\t[null,\nnull,\r\"t\",\"e\",{}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parseFrame(b)
		ref, refErr := parseFrameReflect(b)
		if (err == nil) != (refErr == nil) || err == nil && !reflect.DeepEqual(fr, ref) || err != nil && err.Error() != refErr.Error() {
			t.Fatalf("parseFrame(%q) = %+v, %v; encoding/json reads %+v, %v", b, fr, err, ref, refErr)
		}
		if err == nil {
			if got, want := fr.encode(), encodeReflect(fr); !bytes.Equal(got, want) {
				t.Fatalf("encode = %s, json.Marshal writes %s", got, want)
			}
			for _, reason := range []string{fr.Topic, fr.Event, reasonUnknownEvent} {
				want, _ := json.Marshal(map[string]string{"reason": reason})
				if got := reasonResponse(reason); !bytes.Equal(got, want) {
					t.Fatalf("reasonResponse = %s, json.Marshal writes %s", got, want)
				}
			}
			for _, st := range []string{"ok", "error", "<&>", "é"} {
				for _, resp := range []json.RawMessage{emptyObject, json.RawMessage(`{ "reason" : "a<b" }`), fr.Payload, nil, reasonResponse(st)} {
					if got, want := replyFrame(fr, st, resp), replyReflect(fr, st, resp); !bytes.Equal(got, want) {
						t.Fatalf("replyFrame = %s, json.Marshal writes %s", got, want)
					}
				}
			}
		}
		if err != nil {
			var ef errFrame
			if !errors.As(err, &ef) || len(ef) == 0 || len(ef) > 123 {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		enc := fr.encode()
		again, err := parseFrame(enc)
		if err != nil {
			t.Fatalf("re-encoded frame %s rejected: %v", enc, err)
		}
		var a, b2 any
		if json.Unmarshal(fr.Payload, &a) != nil || json.Unmarshal(again.Payload, &b2) != nil || !reflect.DeepEqual(a, b2) {
			t.Fatalf("payload changed: %s → %s", fr.Payload, again.Payload)
		}
		fr.Payload, again.Payload = nil, nil
		if !reflect.DeepEqual(fr, again) {
			t.Fatalf("round trip: %+v → %+v", fr, again)
		}
		reply := replyFrame(fr, "ok", emptyObject)
		if !json.Valid(reply) || !bytes.HasSuffix(reply, []byte(`"phx_reply",{"status":"ok","response":{}}]`)) {
			t.Fatalf("reply %s", reply)
		}
	})
}

// parseFrameReflect, encodeReflect and replyReflect are parseFrame, encode
// and replyFrame through encoding/json's reflection, as they were written
// before: the hand-written ones must read and write the same.
func parseFrameReflect(b []byte) (frame, error) {
	if !utf8.Valid(b) {
		return frame{}, errFrame("invalid frame: not UTF-8")
	}
	if !json.Valid(b) {
		return frame{}, errFrame("invalid frame: not JSON")
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 5 {
		return frame{}, errFrame("invalid frame: expected [join_ref, ref, topic, event, payload]")
	}
	ref := func(raw json.RawMessage) (*string, error) {
		if bytes.Equal(raw, jsonNull) {
			return nil, nil
		}
		if raw[0] != '"' {
			return nil, errors.New("not a string")
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return &s, nil
	}
	var f frame
	var err error
	if f.JoinRef, err = ref(raw[0]); err != nil {
		return frame{}, errFrame("invalid frame: join_ref must be a string or null")
	}
	if f.Ref, err = ref(raw[1]); err != nil {
		return frame{}, errFrame("invalid frame: ref must be a string or null")
	}
	if json.Unmarshal(raw[2], &f.Topic) != nil || raw[2][0] != '"' || f.Topic == "" {
		return frame{}, errFrame("invalid frame: topic must be a non-empty string")
	}
	if json.Unmarshal(raw[3], &f.Event) != nil || raw[3][0] != '"' || f.Event == "" {
		return frame{}, errFrame("invalid frame: event must be a non-empty string")
	}
	if raw[4][0] != '{' {
		return frame{}, errFrame("invalid frame: payload must be an object")
	}
	f.Payload = raw[4]
	return f, nil
}

func encodeReflect(f frame) []byte {
	b, err := json.Marshal([]any{f.JoinRef, f.Ref, f.Topic, f.Event, f.Payload})
	if err != nil {
		panic(err)
	}
	return b
}

func replyReflect(f frame, status string, response json.RawMessage) []byte {
	payload, _ := json.Marshal(struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}{status, response})
	return encodeReflect(frame{JoinRef: f.JoinRef, Ref: f.Ref, Topic: f.Topic, Event: "phx_reply", Payload: payload})
}
