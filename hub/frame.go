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
//
// The frame is split and its strings read by hand, and replyFrame writes
// by hand, because encoding/json's reflection is deep: a heartbeat
// through it grew every socket's reader goroutine's stack from 4 to
// 8 KiB, which it then kept (see handle). encoding/json still reads the
// rare string with escapes, and writes what needs escaping.
func parseFrame(b []byte) (frame, error) {
	if !utf8.Valid(b) {
		return frame{}, errFrame("invalid frame: not UTF-8")
	}
	if !json.Valid(b) {
		return frame{}, errFrame("invalid frame: not JSON")
	}
	var raw [5][]byte
	if !splitFrame(b, &raw) {
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
	if f.Topic, err = jsonString(raw[2]); err != nil || f.Topic == "" {
		return frame{}, errFrame("invalid frame: topic must be a non-empty string")
	}
	if f.Event, err = jsonString(raw[3]); err != nil || f.Event == "" {
		return frame{}, errFrame("invalid frame: event must be a non-empty string")
	}
	if raw[4][0] != '{' {
		return frame{}, errFrame("invalid frame: payload must be an object")
	}
	f.Payload = raw[4]
	return f, nil
}

// splitFrame splits b, valid JSON, into the elements of its top-level
// array (each without the whitespace around it); false unless b is an
// array of exactly five.
func splitFrame(b []byte, out *[5][]byte) bool {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '[' {
		return false
	}
	n := 0
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		end := valueEnd(b, i)
		if n == len(out) {
			return false
		}
		out[n] = b[i:end]
		n++
		if i = skipSpace(b, end); i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return n == len(out)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd is where the JSON value starting at b[i] ends (b is valid).
func valueEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return i // the end of the enclosing array
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return i
		}
	}
	return i
}

// jsonString reads a JSON string (an error for any other value).
func jsonString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil // valid JSON: no escape, no control character
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func ref(raw []byte) (*string, error) {
	if bytes.Equal(raw, jsonNull) {
		return nil, nil
	}
	s, err := jsonString(raw)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// encode is the frame as the v2 serializer writes it (as json.Marshal of
// the five elements would).
func (f frame) encode() []byte {
	if !plainJSON(f.JoinRef) || !plainJSON(f.Ref) || !plainString(f.Topic) || !plainString(f.Event) || !plainRaw(f.Payload) {
		b, err := json.Marshal([]any{f.JoinRef, f.Ref, f.Topic, f.Event, f.Payload})
		if err != nil {
			// Only the payload could fail, and it is always valid JSON here.
			panic(err)
		}
		return b
	}
	b := make([]byte, 0, 24+len(f.Topic)+len(f.Event)+len(f.Payload))
	b = append(appendRef(append(appendRef(append(b, '['), f.JoinRef), ','), f.Ref), ',')
	b = append(appendPlain(append(appendPlain(b, f.Topic), ','), f.Event), ',')
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, f.Payload); err != nil {
		panic(err) // always valid JSON here
	}
	return append(buf.Bytes(), ']')
}

// plainString reports whether json.Marshal writes s as it is, quoted.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func plainJSON(s *string) bool { return s == nil || plainString(*s) }

// plainRaw reports whether json.Compact writes raw as json.Marshal would
// (which also escapes <, > and & and the line and paragraph separators,
// and writes null for an empty one).
func plainRaw(raw []byte) bool {
	return len(raw) > 0 && bytes.IndexAny(raw, "<>&\u2028\u2029") < 0
}

func appendPlain(b []byte, s string) []byte { return append(append(append(b, '"'), s...), '"') }

func appendRef(b []byte, s *string) []byte {
	if s == nil {
		return append(b, jsonNull...)
	}
	return appendPlain(b, *s)
}

var emptyObject = json.RawMessage(`{}`)

// replyFrame answers the client's frame f with phx_reply.
func replyFrame(f frame, status string, response json.RawMessage) []byte {
	var payload []byte
	if plainString(status) && len(response) > 0 {
		payload = append(appendPlain(append(make([]byte, 0, 24+len(status)+len(response)), `{"status":`...), status), `,"response":`...)
		payload = append(append(payload, response...), '}') // encode compacts it
	} else {
		payload, _ = json.Marshal(struct {
			Status   string          `json:"status"`
			Response json.RawMessage `json:"response"`
		}{status, response})
	}
	return frame{JoinRef: f.JoinRef, Ref: f.Ref, Topic: f.Topic, Event: "phx_reply", Payload: payload}.encode()
}

// reasonResponse is an error reply's response.
// (Written by hand: it is answered on the socket's reader goroutine, see
// parseFrame.)
func reasonResponse(reason string) json.RawMessage {
	if !plainString(reason) {
		b, _ := json.Marshal(map[string]string{"reason": reason})
		return b
	}
	return append(appendPlain([]byte(`{"reason":`), reason), '}')
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
