package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverhub/riverhub/internal/netguard"
	"github.com/riverhub/riverhub/verify"
)

// excerptBytes is how much of a receiver's answer is kept with an attempt.
const excerptBytes = 4096

// excerptBufs are the buffers answers are read into: most answers are
// empty or short, and a buffer of its own per attempt was 4 KiB of garbage
// each (a third of an attempt's allocations).
var excerptBufs = sync.Pool{New: func() any { return new([excerptBytes]byte) }}

// newClient returns the HTTP client attempts use: no redirects, the attempt
// timeout, and in production a dialer that resolves the host itself and
// refuses blocked addresses on every attempt (a DNS answer may change
// between attempts).
//
// The idle pool holds as many connections per host as attempts can be in
// flight: endpoints often share a host, and a smaller pool closes and
// redials connections on every burst (measured: ~31k dials per 50k
// deliveries with 64, ~500 with 512).
func newClient(timeout time.Duration, guard *netguard.Guard, production bool, concurrency int) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil, // a proxy would hide the real target from the guard
		MaxIdleConns:        2 * concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: timeout,
		DialContext:         d.DialContext,
	}
	if production {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := guard.Resolve(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errBlocked, err)
			}
			var last error
			for _, ip := range ips {
				c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		}
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var errBlocked = errors.New("target address not allowed")

// outcome of one attempt.
type outcome struct {
	status   int
	excerpt  string
	err      string
	duration time.Duration
	headers  map[string]string // the request's headers, as sent
	// retryAfter is how long a receiver that answered 429 or 503 asked
	// to be left alone (Retry-After), within [minRetryAfter, maxRetryAfter].
	retryAfter time.Duration
}

// A receiver's Retry-After is honoured within these bounds: shorter is
// treated as the floor, longer as the cap (a typo of "86400" must not
// park an endpoint for a day).
const (
	minRetryAfter = time.Second
	maxRetryAfter = 10 * time.Minute
)

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Zero when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		d = time.Duration(min(max(n, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	return min(max(d, minRetryAfter), maxRetryAfter)
}

func (o outcome) ok() bool { return o.err == "" && o.status >= 200 && o.status < 300 }

// send makes one attempt.
func send(ctx context.Context, c *http.Client, url, id, channelID string, body []byte, secrets []string, now time.Time, timeout time.Duration) outcome {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return outcome{err: "invalid url"}
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = verify.SignStandard(id, now.Unix(), body, s)
	}
	h := req.Header
	h["content-type"] = []string{"application/json"}
	h["mr-signature"] = []string{verify.SignMR(body, secrets[0])}
	h["mr-timestamp"] = []string{ts}
	h["mr-channel-id"] = []string{channelID}
	h["webhook-id"] = []string{id}
	h["webhook-timestamp"] = []string{ts}
	h["webhook-signature"] = []string{strings.Join(sigs, " ")}
	// The hosted service's sample backends check these instead. The header
	// holds one signature, so it follows mr-signature: the new secret
	// during a rotation (docs/webhooks.md).
	h[verify.HeaderModelRiverSignature] = []string{verify.SignModelRiver(now.Unix(), body, secrets[0])}
	h[verify.HeaderModelRiverTimestamp] = []string{ts}
	h["User-Agent"] = []string{"riverhub-webhooks/1"}
	sent := make(map[string]string, len(h))
	for k, v := range h {
		sent[strings.ToLower(k)] = v[0]
	}
	res, err := c.Do(req)
	o := outcome{duration: time.Since(start), headers: sent}
	if err != nil {
		o.err = describe(err, timeout)
		return o
	}
	defer res.Body.Close()
	o.status = res.StatusCode
	if o.status == http.StatusTooManyRequests || o.status == http.StatusServiceUnavailable {
		o.retryAfter = parseRetryAfter(res.Header.Get("Retry-After"), time.Now())
	}
	buf := excerptBufs.Get().(*[excerptBytes]byte)
	n, _ := io.ReadFull(res.Body, buf[:])
	o.excerpt = string(buf[:n])
	excerptBufs.Put(buf)
	_, _ = io.CopyN(io.Discard, res.Body, 64<<10) // let the connection be reused
	o.duration = time.Since(start)
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		o.err = fmt.Sprintf("status %d: redirects are not followed", res.StatusCode)
	} else if !o.ok() {
		o.err = fmt.Sprintf("status %d", res.StatusCode)
	}
	return o
}

// describe turns a transport error into a short line for the audit trail.
func describe(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, errBlocked):
		msg := err.Error()
		return msg[strings.Index(msg, errBlocked.Error()):]
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout after " + timeout.String()
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "Post ") {
		msg = msg[i+2:] // drop `Post "url":` — the URL is recorded beside it
	}
	return msg
}
