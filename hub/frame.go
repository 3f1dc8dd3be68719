package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// frame is one Phoenix v2 message: [join_ref, ref, topic, event, payload].
type frame struct {
	JoinRef *string // nil: null
	Ref     *string // nil: null
	Topic   string
	Event   string
	Payload json.RawMessage // a JSON object
}

// errFrame is a text frame that is not a Phoenix v2 message; its text is
// the close reason (kept under the 123 bytes a close frame allows).
type errFrame string

func (e errFrame) Error() string { return string(e) }

var jsonNull = []byte("null")

// parseFrame decodes a client's text frame. Refs are strings or null (the
// phoenix client's refs are strings), topic and event non-empty strings,
// the payload an object; exactly five elements. Anything else is an
// errFrame: the socket speaks another protocol and is closed.
func parseFrame(b []byte) (frame, error) {
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

func ref(raw json.RawMessage) (*string, error) {
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

// encode is the frame as the v2 serializer writes it.
func (f frame) encode() []byte {
	b, err := json.Marshal([]any{f.JoinRef, f.Ref, f.Topic, f.Event, f.Payload})
	if err != nil {
		// Only the payload could fail, and it is always valid JSON here.
		panic(err)
	}
	return b
}

var emptyObject = json.RawMessage(`{}`)

// replyFrame answers the client's frame f with phx_reply.
func replyFrame(f frame, status string, response json.RawMessage) []byte {
	payload, _ := json.Marshal(struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}{status, response})
	return frame{JoinRef: f.JoinRef, Ref: f.Ref, Topic: f.Topic, Event: "phx_reply", Payload: payload}.encode()
}

// reasonResponse is an error reply's response.
func reasonResponse(reason string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"reason": reason})
	return b
}

// pushPrefix is the start of every push to one join:
// [join_ref,"<seq>",topic, — split around the seq (head is [join_ref, and
// tail ,topic,); the event, the payload and "]" follow.
func pushPrefix(joinRef *string, topic string) (head, tail []byte) {
	ref, _ := json.Marshal(joinRef) // null when nil
	t, _ := json.Marshal(topic)
	head = append(append([]byte{'['}, ref...), ',')
	tail = append(append([]byte{','}, t...), ',')
	return head, tail
}

// lastSeq reads a join's {"last_seq": N}: the seq of the last message the
// client has (each push carries its seq as its ref), so that a rejoin
// replays only what came after. Anything else replays everything.
func lastSeq(payload json.RawMessage) int64 {
	var p struct {
		LastSeq *int64 `json:"last_seq"`
	}
	if json.Unmarshal(payload, &p) != nil || p.LastSeq == nil || *p.LastSeq < 0 {
		return 0
	}
	return *p.LastSeq
}
