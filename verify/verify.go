// Package verify checks riverhub webhook signatures on the receiving side,
// and makes them on the sending side (dispatch). Each function takes the
// raw body, so verify it before parsing it:
//
//	body, _ := io.ReadAll(r.Body)
//	if !verify.MRSignature(body, r.Header.Get("mr-signature"), secret) { 401 }
//	// or, Standard Webhooks, with replay protection:
//	if err := verify.StandardWebhooks(body, r.Header, secret, 5*time.Minute); err != nil { 401 }
//	// or the hosted service's sample scheme (X-ModelRiver-Signature):
//	if err := verify.ModelRiver(body, r.Header, secret, 5*time.Minute); err != nil { 401 }
//
// mr-signature and webhook-signature sign the exact body bytes;
// X-ModelRiver-Signature signs the timestamp and the payload's data as
// JSON.stringify writes it (see ModelRiverPayload).
package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SignMR is the mr-signature of body: lowercase hex HMAC-SHA256 keyed with
// the secret string as given (whsec_…).
func SignMR(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// MRSignature reports whether sig is the mr-signature of body, comparing
// in constant time.
func MRSignature(body []byte, sig, secret string) bool {
	want := SignMR(body, secret)
	return hmac.Equal([]byte(strings.ToLower(strings.TrimSpace(sig))), []byte(want))
}

// standardKey is the Standard Webhooks signing key: the base64 part of a
// whsec_ secret, decoded; a secret without the prefix is used as bytes.
func standardKey(secret string) []byte {
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return k
		}
	}
	return []byte(secret)
}

// SignStandard is one Standard Webhooks signature ("v1,<base64>") over
// "{id}.{timestamp}.{body}".
func SignStandard(id string, ts int64, body []byte, secret string) string {
	m := hmac.New(sha256.New, standardKey(secret))
	m.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Errors of StandardWebhooks and ModelRiver, which wrap the first two with
// the headers concerned; test with errors.Is.
var (
	ErrMissingHeaders = errors.New("missing signature headers")
	ErrTimestamp      = errors.New("timestamp unreadable or outside the tolerance")
	ErrSignature      = errors.New("no matching signature")
)

// StandardWebhooks verifies the webhook-id / webhook-timestamp /
// webhook-signature headers. The signature header may hold several
// space-separated signatures (during a secret rotation both the old and the
// new secret sign); one match suffices. tolerance <= 0 skips the
// timestamp check.
func StandardWebhooks(body []byte, h http.Header, secret string, tolerance time.Duration) error {
	id, tsRaw, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsRaw == "" || sigs == "" {
		return fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature are required", ErrMissingHeaders)
	}
	ts, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil || !fresh(ts, tolerance) {
		return fmt.Errorf("%w: webhook-timestamp", ErrTimestamp)
	}
	want := SignStandard(id, ts, body, secret)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrSignature
}

// fresh reports whether the Unix-seconds ts is within tolerance of now,
// either way; tolerance <= 0 accepts any.
func fresh(ts int64, tolerance time.Duration) bool {
	if tolerance <= 0 {
		return true
	}
	d := time.Since(time.Unix(ts, 0))
	return d <= tolerance && d >= -tolerance
}
