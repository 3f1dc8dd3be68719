package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/riverhub/riverhub/internal/jscanon"
)

// The hosted service's sample backends verify these two headers instead of
// the documented mr-signature.
const (
	HeaderModelRiverSignature = "X-ModelRiver-Signature"
	HeaderModelRiverTimestamp = "X-ModelRiver-Timestamp"
)

// ModelRiverPayload is what X-ModelRiver-Signature signs after
// "{timestamp}.": JSON.stringify(JSON.parse(body).data) as Node.js writes
// it, or the body itself when data is absent or null (task.ai_generated,
// a failed generation, webhook.test) or the body is not a JSON object.
//
// The receivers re-serialise the parsed data (Express's express.json()
// has already parsed the body), so the data bytes must be JSON.stringify's
// own: its number spelling, its key order (array-index keys first), its
// escapes. jscanon gives exactly those.
func ModelRiverPayload(body []byte) []byte {
	canon, err := jscanon.Canonical(body)
	if err != nil {
		return body
	}
	data := member(canon, "data")
	if data == nil || string(data) == "null" {
		return body
	}
	return data
}

// member returns the value of key in obj, the output of jscanon: compact,
// without duplicate keys, and with key characters escaped only where
// JSON.stringify escapes them, so "data" is spelled `"data"` and occurs at
// most once. nil if obj is not an object or has no such key.
func member(obj []byte, key string) []byte {
	if len(obj) < 2 || obj[0] != '{' {
		return nil
	}
	for i := 1; i < len(obj) && obj[i] != '}'; {
		k := obj[i:skipValue(obj, i)]
		i += len(k) + 1 // the key and its ':'
		end := skipValue(obj, i)
		if len(k) == len(key)+2 && string(k[1:len(k)-1]) == key {
			return obj[i:end]
		}
		i = end
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
	return nil
}

// skipValue returns the offset just past the compact JSON value at b[i].
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			continue
		case '}', ']':
			depth--
			if depth < 0 {
				return i // the end of the enclosing container
			}
		case ',':
			if depth == 0 {
				return i
			}
			continue
		default:
			continue // inside a number or literal
		}
		if depth == 0 {
			return i + 1
		}
	}
	return i
}

// SignModelRiver is the X-ModelRiver-Signature of body sent at ts (Unix
// seconds, the X-ModelRiver-Timestamp): lowercase hex HMAC-SHA256, keyed
// with the secret string as given (whsec_…), of
// "{ts}.{ModelRiverPayload(body)}".
func SignModelRiver(ts int64, body []byte, secret string) string {
	return signModelRiver(strconv.FormatInt(ts, 10), ModelRiverPayload(body), secret)
}

func signModelRiver(ts string, payload []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(payload)
	return hex.EncodeToString(m.Sum(nil))
}

// ModelRiver verifies the X-ModelRiver-Signature and X-ModelRiver-Timestamp
// headers of a delivery whose raw body is body. The signature covers the
// timestamp and the payload's data (all of the body only when data is
// absent or null), so tolerance (<= 0 skips the check) also refuses a
// captured request replayed later. The header holds one signature: during
// a secret rotation riverhub signs it with the new secret.
func ModelRiver(body []byte, h http.Header, secret string, tolerance time.Duration) error {
	sig, tsRaw := h.Get(HeaderModelRiverSignature), h.Get(HeaderModelRiverTimestamp)
	if sig == "" || tsRaw == "" {
		return fmt.Errorf("%w: %s and %s are required", ErrMissingHeaders, HeaderModelRiverSignature, HeaderModelRiverTimestamp)
	}
	ts, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil || !fresh(ts, tolerance) {
		return fmt.Errorf("%w: %s", ErrTimestamp, HeaderModelRiverTimestamp)
	}
	// The header's own spelling is signed, as the receivers that
	// concatenate it do.
	want := signModelRiver(tsRaw, ModelRiverPayload(body), secret)
	if !hmac.Equal([]byte(strings.ToLower(strings.TrimSpace(sig))), []byte(want)) {
		return ErrSignature
	}
	return nil
}
