package wire

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

type DecodeAttempt struct {
	N       int64             `json:"attempt"`
	Error   string            `json:"error,omitempty"`
	Headers map[string]string `json:"request_headers,omitempty"`
}

type decodeShape struct {
	ID      string            `json:"id"`
	At      time.Time         `json:"at"`
	Raw     json.RawMessage   `json:"raw"`
	List    []DecodeAttempt   `json:"list"`
	Map     map[string]any    `json:"map"`
	Ptr     *DecodeAttempt    `json:"ptr,omitempty"`
	Number  float64           `json:"number"`
	Flag    bool              `json:"flag,omitempty"`
	Strings map[string]string `json:"strings"`
	Ignored string            `json:"-"`
	Any     any               `json:"any"`
	Escaped string            `json:"escaped"`
	hidden  int
	*DecodeAttempt
}

// TestDecodeAsEncodingJSON: Decode fills what json.Unmarshal fills, for
// the shapes riverhub stores, and refuses what it refuses.
func TestDecodeAsEncodingJSON(t *testing.T) {
	docs := []string{
		`{"id":"c1","at":"2026-12-05T06:00:00.123Z","raw":{"b":[1,2.5,"x"],"a":null},"list":[{"attempt":1,"error":"timeout"},{"attempt":2,"request_headers":{"A":"b"}}],` +
			`"map":{"n":1,"s":"x","o":{"k":[true,false]},"z":null},"ptr":{"attempt":3},"number":-1.25e3,"flag":true,"strings":{"k":"v"},` +
			`"Ignored":"x","any":[1,{"a":"b"}],"escaped":"\u00e9\n\"\\ \ud83d\ude00","attempt":7,"error":"embedded","hidden":1}`,
		`{"ID":"case","unknown":{"deep":[1,2,3]},"list":null,"map":{}}`,
		`{}`,
		`null`,
	}
	for i, doc := range docs {
		var want, got decodeShape
		if err := json.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatalf("doc %d: encoding/json: %v", i, err)
		}
		if err := Decode([]byte(doc), &got); err != nil {
			t.Fatalf("doc %d: Decode: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("doc %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	for _, bad := range []string{``, `{`, `{"id":1}`, `{"id":"x"} x`, `[1]`, `{"at":"yesterday"}`} {
		var v decodeShape
		if err := Decode([]byte(bad), &v); err == nil {
			t.Errorf("Decode(%q): no error", bad)
		}
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("json.Unmarshal(%q): no error (the case is wrong)", bad)
		}
	}
}
