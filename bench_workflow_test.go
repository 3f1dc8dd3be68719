package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/riverhub/riverhub/rdb/rdbtest"
)

// BenchmarkCallbackToRoom measures an event-driven channel's last hop across
// two nodes: 2,000 channels await their callback, each with a socket joined
// to its room on node B; the backend calls back on node A at 1,000
// callbacks/s (open loop), and each latency runs from just before the
// backend's HTTP call to the moment the socket on node B reads the
// completed frame.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench CallbackToRoom -benchtime=1x -count=3 .
func BenchmarkCallbackToRoom(b *testing.B) {
	const channels, rate = 2000, 1000
	for range b.N {
		url := testRedisURL(b)
		prefix := rdbtest.Prefix()
		b.Cleanup(func() { dropPrefix(b, url, prefix) })
		a := startNode(b, testEnv(b, url, prefix))
		nb := startNode(b, testEnv(b, url, prefix))
		a.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
			"event_name": "e", "mock": map[string]any{"response": map[string]any{"title": "Inception"}}})

		// Generate, then join every room on node B.
		answers := make([]map[string]any, channels)
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < channels; i += 32 {
					answers[i] = a.submit(b, "ev", nil)
				}
			}()
		}
		wg.Wait()
		for _, ans := range answers {
			for a.must(b, 200, "GET", "/api/v1/channels/"+ans["channel_id"].(string), nil)["status"] != "ai_generated" {
				time.Sleep(5 * time.Millisecond)
			}
		}
		arrived := make([]time.Time, channels)
		joined := make(chan struct{}, channels)
		var readers sync.WaitGroup
		for i, ans := range answers {
			readers.Add(1)
			go func() {
				defer readers.Done()
				arrived[i] = benchRoom(b, nb, ans, joined)
			}()
		}
		for range channels {
			<-joined
		}

		// Call back on node A at a fixed rate.
		start := make([]time.Time, channels)
		answer := make([]time.Duration, channels)
		tick := time.NewTicker(time.Second / rate)
		var calls sync.WaitGroup
		for i, ans := range answers {
			<-tick.C
			calls.Add(1)
			go func() {
				defer calls.Done()
				body, _ := json.Marshal(map[string]any{"data": map[string]any{"title": "Inception", "id": i}, "task_id": fmt.Sprint(i)})
				start[i] = time.Now()
				status, resp := post(b, a.base+"/v1/callback/"+ans["channel_id"].(string), a.key, body)
				answer[i] = time.Since(start[i])
				if status != 200 {
					b.Errorf("callback %d: %d %s", i, status, resp)
				}
			}()
		}
		tick.Stop()
		calls.Wait()
		readers.Wait()
		lat := make([]time.Duration, channels)
		for i := range lat {
			lat[i] = arrived[i].Sub(start[i])
		}
		b.ReportMetric(ms(percentile(lat, .50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, .99)), "p99-ms")
		b.ReportMetric(ms(percentile(answer, .50)), "http-p50-ms")
		b.ReportMetric(ms(percentile(answer, .99)), "http-p99-ms")
		a.stop()
		nb.stop()
	}
}

// benchRoom joins the channel's room on n, signals joined once the
// history (the ai_generated message) has been replayed, and returns when
// the completed message arrives.
func benchRoom(b *testing.B, n *node, ans map[string]any, joined chan<- struct{}) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + ans["ws_token"].(string)
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		b.Errorf("dial: %v", err)
		joined <- struct{}{}
		return time.Time{}
	}
	defer c.CloseNow()
	join, _ := json.Marshal([]any{"1", "1", ans["websocket_channel"], "phx_join", map[string]any{}})
	if err := c.Write(ctx, websocket.MessageText, join); err != nil {
		b.Errorf("join: %v", err)
		joined <- struct{}{}
		return time.Time{}
	}
	for {
		_, f, err := c.Read(ctx)
		if err != nil {
			b.Errorf("read: %v", err)
			return time.Time{}
		}
		switch {
		case bytes.Contains(f, []byte(`"status":"ai_generated"`)):
			joined <- struct{}{}
		case bytes.Contains(f, []byte(`"status":"completed"`)):
			return time.Now()
		}
	}
}
