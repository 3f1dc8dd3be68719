package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// A socket keeps the buffered reader and writer the handshake hands over
// for as long as it is open; net/http's are 4 KiB each, most of an idle
// socket's memory. The client's frames are small (a join, a heartbeat),
// and a frame larger than a buffer is read into, or written from, the
// caller's slice directly, so small buffers cost nothing but an extra
// write call for a push larger than writeBufferSize.
const (
	readBufferSize  = 512
	writeBufferSize = 1024
)

// leanBuffers is the ResponseWriter given to websocket.Accept: its Hijack
// swaps net/http's 4 KiB buffers for smaller ones.
type leanBuffers struct{ http.ResponseWriter }

func (w leanBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeaderNow is how the websocket library makes gin's writer send the
// 101 before the hijack.
func (w leanBuffers) WriteHeaderNow() {
	if g, ok := w.ResponseWriter.(interface{ WriteHeaderNow() }); ok {
		g.WriteHeaderNow()
	}
}

func (w leanBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right after its request (its first frames) may
	// already sit in net/http's buffer: carry them over into the new
	// buffer, where the library's own look at Buffered finds them.
	n := brw.Reader.Buffered()
	pending, _ := brw.Reader.Peek(n)
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), conn), max(readBufferSize, n))
	if n > 0 {
		if _, err := r.Peek(n); err != nil {
			return nil, nil, err
		}
	}
	// net/http has flushed the 101 before handing the writer over.
	if brw.Writer.Buffered() > 0 {
		if err := brw.Writer.Flush(); err != nil {
			return nil, nil, err
		}
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, writeBufferSize)), nil
}
