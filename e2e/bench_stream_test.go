package e2e

// Token streaming benchmarks (BENCHMARKS.md, "Token streaming"):
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench 'Stream(Tokens|FirstChunk)' -benchtime=1x -count=3 -timeout 30m .

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// tokenProvider is a fake OpenAI-compatible server that streams, for a
// request whose last message is "<stream> <tokens>", that many tokens
// "<stream.k>" at rate tokens/s, each in its own server-sent event, and
// notes when each was written (the first byte of its delta). Streams wait
// for start, then begin at phases spread over one token interval, as
// independent users' answers would.
type tokenProvider struct {
	*httptest.Server
	rate    float64
	start   chan struct{}
	streams int
	sent    [][]atomic.Int64 // [stream][token] unix ns written
}

var tokenPattern = regexp.MustCompile(`<(\d+)\.(\d+)>`)

func newTokenProvider(b *testing.B, streams, tokens int, rate float64) *tokenProvider {
	p := &tokenProvider{rate: rate, start: make(chan struct{}), streams: streams, sent: make([][]atomic.Int64, streams)}
	for i := range p.sent {
		p.sent[i] = make([]atomic.Int64, tokens)
	}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	b.Cleanup(p.Close)
	return p
}

func (p *tokenProvider) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	if json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) == 0 {
		http.Error(w, "bad request", 400)
		return
	}
	var sid, n int
	if _, err := fmt.Sscanf(req.Messages[len(req.Messages)-1].Content, "%d %d", &sid, &n); err != nil || sid >= len(p.sent) || n > len(p.sent[sid]) {
		http.Error(w, "bad stream", 400)
		return
	}
	select {
	case <-p.start:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	every := time.Duration(float64(time.Second) / p.rate)
	at := time.Now().Add(every * time.Duration(sid) / time.Duration(p.streams))
	for k := range n {
		time.Sleep(time.Until(at))
		at = at.Add(every)
		p.sent[sid][k].Store(time.Now().UnixNano())
		fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"<%d.%d>\"},\"finish_reason\":null}]}\n\n", sid, k)
		w.(http.Flusher).Flush()
	}
	fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"+
		"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", n, n+5)
}

// streamWatcher is one socket on node B joined to one streamed channel: it
// notes each token's arrival and the final message's.
type streamWatcher struct {
	conn   *websocket.Conn
	chunks int
	got    []int64 // per token: arrival - written, ns; 0: not arrived
	final  time.Time
	first  time.Time // the first chunk's arrival
	done   chan struct{}
}

func (sw *streamWatcher) read(p *tokenProvider, sid int) {
	defer close(sw.done)
	for {
		_, raw, err := sw.conn.Read(context.Background())
		if err != nil {
			return
		}
		now := time.Now()
		switch {
		case bytes.Contains(raw, []byte(`,"chunk",`)):
			if sw.first.IsZero() {
				sw.first = now
			}
			sw.chunks++
			for _, m := range tokenPattern.FindAllSubmatch(raw, -1) {
				s, _ := strconv.Atoi(string(m[1]))
				k, _ := strconv.Atoi(string(m[2]))
				if s == sid && k < len(sw.got) && sw.got[k] == 0 {
					sw.got[k] = now.UnixNano() - p.sent[s][k].Load()
				}
			}
		case bytes.Contains(raw, []byte(`,"response",`)) && bytes.Contains(raw, []byte(`"status":"`)):
			if bytes.Contains(raw, []byte(`"status":"success"`)) || bytes.Contains(raw, []byte(`"status":"error"`)) {
				sw.final = now
				return
			}
		}
	}
}

// streamDeployment is node A (the workers) and node B (the sockets: one
// worker, so that it runs next to none of the streams) on one prefix, their
// provider a tokenProvider.
func streamDeployment(b *testing.B, p *tokenProvider, workers int, env ...string) (a, bn *node) {
	url := testRedisURL(b)
	prefix := rdbtest.Prefix()
	b.Cleanup(func() { dropPrefix(b, url, prefix) })
	base := append([]string{"RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000",
		"OPENAI_BASE_URL", p.URL + "/v1", "OPENAI_API_KEY", "sk-test", "RIVERHUB_PROVIDER_RETRIES", "0",
		"RIVERHUB_PROVIDER_TIMEOUT", "5m"}, env...)
	a = startNode(b, testEnv(b, url, prefix, append(base, "RIVERHUB_WORKERS", strconv.Itoa(workers))...))
	bn = startNode(b, testEnv(b, url, prefix, append(base, "RIVERHUB_WORKERS", "1")...))
	a.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "s", "provider": "openai", "model": "gpt-test", "stream": true})
	return a, bn
}

// watchStream submits stream sid's task to a (stream: as asked) and joins
// its channel on bn.
func watchStream(a, bn *node, sid, tokens int, stream bool) (*streamWatcher, time.Time, error) {
	body, _ := json.Marshal(map[string]any{"workflow": "s", "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": fmt.Sprintf("%d %d", sid, tokens)}}})
	submitted := time.Now()
	code, out, err := postKey(a.base+"/v1/ai/async", a.key, body)
	if err != nil {
		return nil, submitted, err
	}
	if code != http.StatusOK {
		return nil, submitted, fmt.Errorf("submit answered %d: %s", code, out)
	}
	var ans struct {
		WSToken          string `json:"ws_token"`
		WebsocketChannel string `json:"websocket_channel"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return nil, submitted, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := "ws://" + strings.TrimPrefix(bn.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + ans.WSToken
	sw := &streamWatcher{got: make([]int64, tokens), done: make(chan struct{})}
	if sw.conn, _, err = websocket.Dial(ctx, u, nil); err != nil {
		return nil, submitted, fmt.Errorf("dial node B: %w", err)
	}
	sw.conn.SetReadLimit(1 << 20)
	join, _ := json.Marshal([]any{"1", "1", ans.WebsocketChannel, "phx_join", map[string]any{}})
	if err := sw.conn.Write(ctx, websocket.MessageText, join); err != nil {
		return nil, submitted, err
	}
	return sw, submitted, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkStreamTokens runs BENCH_STREAMS (1,000) streamed tasks at once,
// each answered by the fake provider with BENCH_TOKENS (90) tokens at 30
// tokens/s, the workers on node A and every channel's socket on node B
// (joined before the provider starts), with node A's coalescing window
// RIVERHUB_STREAM_WINDOW (default 50ms; BENCH_STREAM_WINDOW sets another).
//
// Metrics: p50-ms, p99-ms, max-ms (a token's write by the provider to its
// chunk frame's arrival on B's socket, coalescing included); lost (tokens
// never arrived); tokens/chunk; redis-cmds/token (INFO commandstats, every
// command and every command inside the scripts, from the provider's start
// to the last final message, divided by the tokens); redis-us/token
// (Redis CPU); tokens/s.
func BenchmarkStreamTokens(b *testing.B) {
	streams, tokens := envInt("BENCH_STREAMS", 1000), envInt("BENCH_TOKENS", 90)
	var env []string
	if w := os.Getenv("BENCH_STREAM_WINDOW"); w != "" {
		env = append(env, "RIVERHUB_STREAM_WINDOW", w)
	}
	for range b.N {
		b.StopTimer()
		p := newTokenProvider(b, streams, tokens, 30)
		a, bn := streamDeployment(b, p, streams+64, env...)
		rc, err := rdbtest.Client(testRedisURL(b))
		if err != nil {
			b.Fatal(err)
		}
		watchers := make([]*streamWatcher, streams)
		var wg sync.WaitGroup
		var failed atomic.Value
		sem := make(chan struct{}, 64)
		for i := range streams {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				sw, _, err := watchStream(a, bn, i, tokens, true)
				if err != nil {
					failed.Store(err)
					return
				}
				watchers[i] = sw
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		for i, sw := range watchers {
			go sw.read(p, i)
		}
		time.Sleep(time.Second) // the joins' replies and empty histories
		cmds0, cpu0 := redisCalls(rc), redisCPU(rc)
		start := time.Now()
		b.StartTimer()
		close(p.start)
		for _, sw := range watchers {
			select {
			case <-sw.done:
			case <-time.After(time.Duration(tokens)*time.Second/30 + 30*time.Second):
			}
		}
		b.StopTimer()
		elapsed := time.Since(start)
		cmds1, cpu1 := redisCalls(rc), redisCPU(rc)
		var lat []time.Duration
		lost, chunks, finals := 0, 0, 0
		for _, sw := range watchers {
			_ = sw.conn.CloseNow()
			chunks += sw.chunks
			if !sw.final.IsZero() {
				finals++
			}
			for _, d := range sw.got {
				if d == 0 {
					lost++
					continue
				}
				lat = append(lat, time.Duration(d))
			}
		}
		_ = rc.Close()
		if os.Getenv("BENCH_DEBUG") != "" { // the tail by the token's place in its stream
			for k0 := 0; k0 < tokens; k0 += 15 {
				var d []time.Duration
				for _, sw := range watchers {
					for k := k0; k < min(k0+15, tokens); k++ {
						if sw.got[k] > 0 {
							d = append(d, time.Duration(sw.got[k]))
						}
					}
				}
				slices.Sort(d)
				b.Logf("tokens %d-%d: p50 %.1f p99 %.1f ms", k0, k0+14, ms(percentile(d, 0.5)), ms(percentile(d, 0.99)))
			}
		}
		total := float64(streams * tokens)
		slices.Sort(lat)
		if len(lat) == 0 {
			b.Fatal("no token arrived")
		}
		b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
		b.ReportMetric(float64(lost), "lost")
		b.ReportMetric(float64(streams-finals), "no-final")
		b.ReportMetric(total/float64(max(chunks, 1)), "tokens/chunk")
		b.ReportMetric(callsPerTask(b, cmds0, cmds1, total), "redis-cmds/token")
		b.ReportMetric((cpu1-cpu0)*1e6/total, "redis-us/token")
		b.ReportMetric(total/elapsed.Seconds(), "tokens/s")
	}
}

// BenchmarkStreamFirstChunk times one 500-token answer (BENCH_TOKENS) at
// 30 tokens/s, from the submission to its first chunk frame and to its
// final message on a socket of node B, streamed and not.
func BenchmarkStreamFirstChunk(b *testing.B) {
	tokens := envInt("BENCH_TOKENS", 500)
	for range b.N {
		b.StopTimer()
		p := newTokenProvider(b, 2, tokens, 30)
		close(p.start)
		a, bn := streamDeployment(b, p, 8)
		var res [2][2]time.Duration // [streamed?][first chunk, final]
		for i, stream := range []bool{true, false} {
			b.StartTimer()
			sw, submitted, err := watchStream(a, bn, i, tokens, stream)
			if err != nil {
				b.Fatal(err)
			}
			sw.read(p, i)
			b.StopTimer()
			_ = sw.conn.CloseNow()
			if sw.final.IsZero() {
				b.Fatalf("stream %v: no final message", stream)
			}
			if !sw.first.IsZero() {
				res[i][0] = sw.first.Sub(submitted)
			}
			res[i][1] = sw.final.Sub(submitted)
		}
		if res[1][0] != 0 || res[0][0] == 0 {
			b.Fatalf("first chunks: streamed %v, not streamed %v", res[0][0], res[1][0])
		}
		b.ReportMetric(ms(res[0][0]), "first-chunk-ms")
		b.ReportMetric(ms(res[0][1]), "final-ms")
		b.ReportMetric(ms(res[1][1]), "unstreamed-final-ms")
	}
}
