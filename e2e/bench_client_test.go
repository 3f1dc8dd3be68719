package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

// submitter sends one client's submissions of a benchmark, one at a time.
type submitter interface {
	// post sends body to path and returns the answer's status and body.
	post(path string, body []byte) (int, []byte, error)
	close()
}

// newSubmitter returns the load generator of one of a benchmark's clients:
// by default a lean HTTP/1.1 client (rawClient); with BENCH_CLIENT=net/http,
// or for a base URL other than plain http, net/http's. Both send the same
// requests over keep-alive connections.
func newSubmitter(base, key string) submitter {
	addr, plain := strings.CutPrefix(base, "http://")
	if os.Getenv("BENCH_CLIENT") == "net/http" || !plain {
		return httpSubmitter{base: base, key: key}
	}
	return &rawClient{addr: addr, key: key}
}

// submitID posts a task and returns its channel, as submitAsync does.
func submitID(s submitter, base string, body []byte) (string, error) {
	code, raw, err := s.post("/v1/ai/async", body)
	if err != nil {
		return "", err
	}
	return answerChannel(&refusal{base: base, status: code, body: raw})
}

// httpSubmitter is net/http's client (benchClient).
type httpSubmitter struct{ base, key string }

func (h httpSubmitter) post(path string, body []byte) (int, []byte, error) {
	return postKey(h.base+path, h.key, body)
}

func (httpSubmitter) close() {}

// rawClient is one keep-alive HTTP/1.1 connection that writes each request
// whole with one write and reads the answer from a buffered reader, as load
// tools such as wrk do. net/http's client runs two goroutines per
// connection and hands every request and answer between them, which on a
// machine of two cores costs the server under test about as much CPU as
// its own handling of the request.
type rawClient struct {
	addr, key string
	conn      net.Conn
	r         *bufio.Reader
	req       []byte
}

func (c *rawClient) post(path string, body []byte) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 4096)
	}
	c.req = fmt.Appendf(c.req[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, c.addr, c.key, len(body))
	c.req = append(c.req, body...)
	if _, err := c.conn.Write(c.req); err != nil {
		c.close()
		return 0, nil, err
	}
	res, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.close()
		return 0, nil, err
	}
	out, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil || res.Close {
		c.close()
	}
	return res.StatusCode, out, err
}

func (c *rawClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.r = nil, nil
	}
}
