package jscanon

import (
	"bytes"
	"encoding/json"
	"testing"
)

// benchPayload is a typical webhook body of about 1 KiB, compact as
// encoding/json writes it: nested objects, strings, integers and floats.
const benchPayload = `{"id":"evt_01HZX3K9Q8W7V6T5S4R3P2N1M0","type":"run.completed","created_at":"2025-03-14T09:26:53.589Z","api_version":"2025-01-01","attempt":1,"data":{"run":{"id":"run_8f14e45fceea167a5a36dedd4bea2543","workflow_id":"wf_c9f0f895fb98ab9159f51fd0297e236d","status":"succeeded","started_at":"2025-03-14T09:26:41.102Z","finished_at":"2025-03-14T09:26:53.571Z","duration_ms":12469,"steps":[{"name":"fetch","status":"succeeded","duration_ms":812,"retries":0},{"name":"summarize","status":"succeeded","duration_ms":10944,"retries":1,"model":"small-2","tokens":{"input":1834,"output":412,"cached":0},"cost_usd":0.004127},{"name":"notify","status":"succeeded","duration_ms":713,"retries":0}],"output":{"summary":"Quarterly revenue grew 12.5% year over year; churn fell to 2.1% and the pipeline for Q3 is the strongest on record.","confidence":0.92,"labels":["finance","quarterly","positive"],"score":87.25}},"account":{"id":"acct_1234567890","name":"Example Industries","plan":"team","seats":25,"region":"eu-west"},"metadata":{"source":"scheduler","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","retry_of":null,"dry_run":false}}}`

func BenchmarkCanonical(b *testing.B) {
	in := []byte(benchPayload)
	dst := make([]byte, 0, 2*len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendCanonical(dst[:0], in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalAlloc measures the convenience API, which allocates its
// result.
func BenchmarkCanonicalAlloc(b *testing.B) {
	in := []byte(benchPayload)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonical(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalRewrite is the same payload indented, with escapes,
// non-canonical numbers and keys that must move, so that every slow path
// runs.
func BenchmarkCanonicalRewrite(b *testing.B) {
	var ind bytes.Buffer
	if err := json.Indent(&ind, []byte(benchPayload), "", "  "); err != nil {
		b.Fatal(err)
	}
	in := bytes.Replace(ind.Bytes(), []byte(`"account": {`), []byte(`"account": {"2": 1.0, "1": 1E+2, "html": "\u003cb\u003e\/", "id": 5,`), 1)
	dst := make([]byte, 0, 2*len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendCanonical(dst[:0], in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEncodeBaseline is the naive approach (decode into any,
// encode again) for comparison; it does not even produce the right bytes.
func BenchmarkDecodeEncodeBaseline(b *testing.B) {
	in := []byte(benchPayload)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}
