package hub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// maskedText is a client's text frame (clients mask what they send).
func maskedText(payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	var b bytes.Buffer
	b.WriteByte(0x81) // FIN, text
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(0x80 | byte(n))
	default:
		b.WriteByte(0x80 | 126)
		_ = binary.Write(&b, binary.BigEndian, uint16(n))
	}
	b.Write(key[:])
	for i, c := range payload {
		b.WriteByte(c ^ key[i%4])
	}
	return b.Bytes()
}

// A client that sends its join in the same packet as the upgrade request
// (the join is then already in net/http's buffer when the socket is
// handed over) is answered: the bytes survive the swap to small buffers.
func TestFramesSentWithTheHandshake(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	_, _, topic, token := e.channel()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	join, _ := json.Marshal([]any{"1", "1", topic, "phx_join", map[string]any{}})
	req := fmt.Sprintf("GET /socket/websocket?vsn=2.0.0&token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", token)
	heartbeat := []byte(`[null,"2","phoenix","heartbeat",{}]`)
	packet := append(append([]byte(req), maskedText(join)...), maskedText(heartbeat)...)
	if _, err := conn.Write(packet); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", res, err)
	}
	for _, want := range []string{`["1","1",` + fmt.Sprintf("%q", topic) + `,"phx_reply",{"status":"ok"`, `[null,"2","phoenix","phx_reply",{"status":"ok"`} {
		var hdr [2]byte
		if _, err := br.Read(hdr[:1]); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if _, err := br.Read(hdr[1:]); err != nil {
			t.Fatal(err)
		}
		n := int(hdr[1] & 0x7f)
		if n == 126 {
			var l uint16
			_ = binary.Read(br, binary.BigEndian, &l)
			n = int(l)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(p), want) {
			t.Fatalf("got %s, want %s…", p, want)
		}
	}
}

// Frames larger than the socket's buffers, both ways, arrive whole.
func TestFramesLargerThanTheBuffers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	pad := strings.Repeat("x", 8*writeBufferSize)
	c.push(nil, "phoenix", "heartbeat", map[string]string{"pad": pad[:4*readBufferSize]})
	if m := c.read(); m.Event != "phx_reply" {
		t.Fatalf("want the heartbeat's reply, got %s", m)
	}
	big := fmt.Sprintf(`{"pad":%q}`, pad)
	publish(t, h, pid, cid, big)
	c.response(topic, ref, big)
}

// An idle socket holds one goroutine, its reader: the handler has
// returned and no writer waits for frames.
func TestIdleSocketsHoldOneGoroutineEach(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	e := newEnv(t)
	_, srv := e.node(Options{})
	runtime.GC()
	base := runtime.NumGoroutine()
	const n = 50
	for range n {
		_, _, topic, token := e.channel()
		c := dial(t, srv, token)
		c.mustJoin(topic)
		c.heartbeat()
	}
	var now int
	eventually(t, "the writers and handlers to return", func() bool {
		now = runtime.NumGoroutine()
		return now-base <= n+n/10
	})
	t.Logf("%d goroutines for %d idle sockets", now-base, n)
}
