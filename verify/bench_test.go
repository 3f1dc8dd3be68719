package verify

import (
	"strings"
	"testing"
)

// benchBody is a typical task.completed body, about 2 KiB.
var benchBody = []byte(`{"type":"task.completed","workflow":"support-summary","status":"success","channel_id":"550e8400-e29b-41d4-a716-446655440000",` +
	`"data":{"summary":"` + strings.Repeat("Customer asked for a refund of order 12345 & more. ", 30) + `","sentiment":"negative","score":0.83,"tags":["billing","refund"]},` +
	`"meta":{"provider":"openai","model":"gpt-4o","tokens":{"prompt":245,"completion":89,"total":334},"duration_ms":2341,"attempts":[{"provider":"openai","model":"gpt-4o","duration_ms":2341,"success":true}]},` +
	`"customer_data":{"user_id":"user_789"},"timestamp":"2026-01-05T12:34:56.789Z"}`)

// What each attempt's signatures cost: X-ModelRiver-Signature parses the
// body (jscanon) to find data, the others only hash it.
func BenchmarkSignMR(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		SignMR(benchBody, "whsec_dGVzdA==")
	}
}

func BenchmarkSignStandard(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		SignStandard("msg_1", 1700000000, benchBody, "whsec_dGVzdA==")
	}
}

func BenchmarkSignModelRiver(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		SignModelRiver(1700000000, benchBody, "whsec_dGVzdA==")
	}
}
