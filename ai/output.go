package ai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// errOutputMismatch prefixes every structured-output failure so that users
// can tell "the model answered badly" from "the provider failed".
var errOutputMismatch = errors.New("output does not match schema")

// maxSchemaErrorLen bounds the validation detail in an attempt error: the
// first few violations are what a user needs to fix a prompt.
const maxSchemaErrorLen = 300

// parseOutput turns a model's text into Result.Data.
//
// With a schema, the text (without a surrounding ```json fence) must be one
// JSON value valid against it, and Data is that value compacted. Without a
// schema, a text that is a JSON object becomes Data as is (compacted); any
// other text is wrapped as {"content": text}. Data is always valid UTF-8.
func parseOutput(text []byte, sch *compiledSchema) (json.RawMessage, error) {
	if !utf8.Valid(text) {
		// Invalid bytes would survive compaction and break consumers
		// that require UTF-8 (databases, browsers).
		text = bytes.ToValidUTF8(text, []byte("\uFFFD"))
	}
	body := unfence(bytes.TrimSpace(text))

	if sch == nil {
		if len(body) > 0 && body[0] == '{' {
			// Compact validates as it goes, so a separate json.Valid
			// pass would only double the work.
			if data, err := compactJSON(body); err == nil {
				return data, nil
			}
		}
		return contentObject(text), nil
	}

	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %s", errOutputMismatch, truncate(oneLine(err.Error()), maxSchemaErrorLen))
	}
	if err := sch.validator.Validate(inst); err != nil {
		detail := err.Error()
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			detail = describeValidation(ve)
		}
		return nil, fmt.Errorf("%w: %s", errOutputMismatch, truncate(oneLine(detail), maxSchemaErrorLen))
	}
	return compactJSON(body)
}

var fence = []byte("```")

// unfence strips one Markdown code fence wrapping the whole text, as models
// often answer "```json\n{...}\n```" even when asked for bare JSON. Anything
// else is returned unchanged.
func unfence(b []byte) []byte {
	if len(b) < 2*len(fence) || !bytes.HasPrefix(b, fence) || !bytes.HasSuffix(b, fence) {
		return b
	}
	inner := b[len(fence) : len(b)-len(fence)]
	nl := bytes.IndexByte(inner, '\n')
	if nl < 0 {
		return b
	}
	if !isInfoString(bytes.TrimSpace(inner[:nl])) {
		return b
	}
	return bytes.TrimSpace(inner[nl+1:])
}

// isInfoString accepts the language tag of a fence ("json", "JSON", "" ...)
// and rejects lines that are content, such as a fence glued to "{".
func isInfoString(b []byte) bool {
	for _, c := range b {
		if !isNameByte(c) {
			return false
		}
	}
	return true
}

func compactJSON(b []byte) (json.RawMessage, error) {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const (
	contentPrefix = `{"content":"`
	contentSuffix = `"}`
)

// contentObject returns {"content": text}. It is hand-rolled because it runs
// for every schemaless task and json.Marshal would both allocate more and
// HTML-escape the text, which bloats it for no benefit.
func contentObject(text []byte) json.RawMessage {
	out := make([]byte, 0, len(contentPrefix)+len(text)+len(contentSuffix)+8)
	out = append(out, contentPrefix...)
	out = appendJSONStringBody(out, text)
	return append(out, contentSuffix...)
}

const hexDigits = "0123456789abcdef"

// appendJSONStringBody appends s escaped for use between JSON quotes.
// Invalid UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped like
// encoding/json does so that the output is safe to embed in JavaScript.
func appendJSONStringBody(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(dst, s[start:]...)
}

// oneLine makes s valid UTF-8 and flattens whitespace runs containing
// control characters, so that an error fits on one log line and one table
// cell.
func oneLine(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if isControl(r) || r == ' ' {
			if !space {
				b.WriteByte(' ')
				space = true
			}
			continue
		}
		space = false
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence,
// marking the cut with "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "..."
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
