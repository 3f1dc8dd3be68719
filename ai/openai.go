package ai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

type openAIRequest struct {
	Model          string                `json:"model"`
	Messages       []Message             `json:"messages"`
	ResponseFormat *openAIResponseFormat `json:"response_format,omitempty"`
	Stream         bool                  `json:"stream,omitempty"`
	StreamOptions  *openAIStreamOptions  `json:"stream_options,omitempty"`
}

type openAIResponseFormat struct {
	Type       string           `json:"type"`
	JSONSchema openAIJSONSchema `json:"json_schema"`
}

type openAIJSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	// Strict mode rejects many ordinary schemas (it requires every property
	// to be required and additionalProperties false); riverhub validates the
	// output itself, so the schema is only guidance here.
	Strict bool `json:"strict"`
}

type openAIResponse struct {
	Choices []struct {
		Message struct {
			Content json.RawMessage `json:"content"`
			Refusal string          `json:"refusal"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// openAI calls an OpenAI-compatible chat completions endpoint.
func (r *Runner) openAI(ctx context.Context, model string, req *Request, sch *compiledSchema) (completion, error) {
	raw, err := r.postJSON(ctx, r.openAIURL, r.openAIBody(model, req, sch), r.openAIHeaders)
	if err != nil {
		return completion{}, err
	}
	return openAICompletion(raw)
}

func (r *Runner) openAIHeaders(h http.Header) {
	if r.openAIKey != "" {
		h.Set("Authorization", "Bearer "+r.openAIKey)
	}
}

// openAIBody is the chat completions request of req.
func (r *Runner) openAIBody(model string, req *Request, sch *compiledSchema) openAIRequest {
	body := openAIRequest{Model: model, Messages: req.Messages}
	if body.Messages == nil {
		body.Messages = []Message{} // "messages": null is rejected
	}
	if req.SystemPrompt != "" {
		body.Messages = make([]Message, 0, len(req.Messages)+1)
		body.Messages = append(body.Messages, Message{Role: "system", Content: req.SystemPrompt})
		body.Messages = append(body.Messages, req.Messages...)
	}
	if sch != nil {
		body.ResponseFormat = &openAIResponseFormat{
			Type: "json_schema",
			JSONSchema: openAIJSONSchema{
				Name:   sanitizeName(req.SchemaName),
				Schema: sch.raw,
			},
		}
	}
	return body
}

// openAICompletion reads a chat completions response.
func openAICompletion(raw []byte) (completion, error) {
	var resp openAIResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return completion{}, fmt.Errorf("unparsable response: %s", truncate(err.Error(), maxProviderMessageLen))
	}
	if len(resp.Choices) == 0 {
		// Some compatible servers answer errors with status 200.
		if msg := providerMessage(raw); msg != "" && len(resp.Error) > 0 {
			return completion{}, fmt.Errorf("error response: %s", msg)
		}
		return completion{}, errors.New("response has no choices")
	}
	choice := resp.Choices[0]
	if choice.Message.Refusal != "" {
		return completion{}, fmt.Errorf("refused: %s", truncate(oneLine(choice.Message.Refusal), maxProviderMessageLen))
	}
	text, err := openAIContent(choice.Message.Content)
	if err != nil {
		return completion{}, err
	}
	if strings.TrimSpace(text) == "" {
		return completion{}, fmt.Errorf("empty response (finish_reason %q)", truncate(choice.FinishReason, 32))
	}

	tokens := Tokens{
		Prompt:     resp.Usage.PromptTokens,
		Completion: resp.Usage.CompletionTokens,
		Total:      resp.Usage.TotalTokens,
	}
	if tokens.Total == 0 {
		tokens.Total = tokens.Prompt + tokens.Completion
	}
	return completion{text: []byte(text), tokens: tokens}, nil
}

// openAIContent reads message.content, which is a string in the chat
// completions API but an array of parts on some compatible servers.
func openAIContent(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("unparsable response: message content is neither a string nor a list of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}
