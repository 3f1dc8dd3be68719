package ai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

const (
	anthropicVersion = "2023-06-01"
	// anthropicMaxTokens is required by the Messages API; it is a ceiling,
	// not a target, and comfortably fits structured outputs.
	anthropicMaxTokens = 4096
	toolDescription    = "Respond with the structured output"
)

type anthropicRequest struct {
	Model      string               `json:"model"`
	MaxTokens  int                  `json:"max_tokens"`
	System     string               `json:"system,omitempty"`
	Messages   []Message            `json:"messages"`
	Tools      []anthropicTool      `json:"tools,omitempty"`
	ToolChoice *anthropicToolChoice `json:"tool_choice,omitempty"`
	Stream     bool                 `json:"stream,omitempty"`
}

type anthropicTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthropicToolChoice struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

type anthropicResponse struct {
	Content []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	StopReason string `json:"stop_reason"`
	Usage      struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// anthropic calls the Messages API. Structured output goes through a tool
// the model is forced to call, whose input is the output.
func (r *Runner) anthropic(ctx context.Context, model string, req *Request, sch *compiledSchema) (completion, error) {
	body, toolName := r.anthropicBody(model, req, sch)
	raw, err := r.postJSON(ctx, r.anthropicURL, body, r.anthropicHeaders)
	if err != nil {
		return completion{}, err
	}
	return anthropicCompletion(raw, sch, toolName)
}

func (r *Runner) anthropicHeaders(h http.Header) {
	h.Set("x-api-key", r.anthropicKey)
	h.Set("anthropic-version", anthropicVersion)
}

// anthropicBody is the Messages request of req, and the name of the tool
// the model must call (with a schema).
func (r *Runner) anthropicBody(model string, req *Request, sch *compiledSchema) (anthropicRequest, string) {
	system, messages := anthropicConversation(req.SystemPrompt, req.Messages)
	if messages == nil {
		messages = []Message{} // "messages": null is rejected
	}
	body := anthropicRequest{
		Model:     model,
		MaxTokens: anthropicMaxTokens,
		System:    system,
		Messages:  messages,
	}
	toolName := ""
	if sch != nil {
		toolName = sanitizeName(req.SchemaName)
		body.Tools = []anthropicTool{{Name: toolName, Description: toolDescription, InputSchema: sch.toolSchema}}
		body.ToolChoice = &anthropicToolChoice{Type: "tool", Name: toolName}
	}
	return body, toolName
}

// anthropicCompletion reads a Messages response.
func anthropicCompletion(raw []byte, sch *compiledSchema, toolName string) (completion, error) {
	var resp anthropicResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return completion{}, fmt.Errorf("unparsable response: %s", truncate(err.Error(), maxProviderMessageLen))
	}
	tokens := Tokens{
		Prompt:     resp.Usage.InputTokens,
		Completion: resp.Usage.OutputTokens,
		Total:      resp.Usage.InputTokens + resp.Usage.OutputTokens,
	}

	if sch == nil {
		var b strings.Builder
		for _, c := range resp.Content {
			if c.Type == "text" {
				b.WriteString(c.Text)
			}
		}
		if strings.TrimSpace(b.String()) == "" {
			return completion{}, anthropicEmpty(resp.StopReason, "no text in response")
		}
		return completion{text: []byte(b.String()), tokens: tokens}, nil
	}

	var input json.RawMessage
	for _, c := range resp.Content {
		if c.Type == "tool_use" && (input == nil || c.Name == toolName) {
			input = c.Input
		}
	}
	if input == nil {
		return completion{}, anthropicEmpty(resp.StopReason, "no tool_use block in response")
	}
	input, err := toolOutput(input, sch)
	if err != nil {
		return completion{}, err
	}
	return completion{text: input, tokens: tokens}, nil
}

// toolOutput is the structured output in the forced tool's input: the
// input itself, or its "value" when the schema was wrapped (a schema that
// is not an object).
func toolOutput(input json.RawMessage, sch *compiledSchema) (json.RawMessage, error) {
	if !sch.wrapped {
		return input, nil
	}
	var w struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(input, &w); err != nil || w.Value == nil {
		return nil, errors.New(`tool input has no "value"`)
	}
	return w.Value, nil
}

func anthropicEmpty(stopReason, otherwise string) error {
	if stopReason == "refusal" {
		return errors.New("refused")
	}
	return fmt.Errorf("%s (stop_reason %q)", otherwise, truncate(stopReason, 32))
}

// anthropicConversation moves system-role messages into the system prompt:
// the Messages API accepts only user and assistant turns.
func anthropicConversation(systemPrompt string, msgs []Message) (string, []Message) {
	n := 0
	for _, m := range msgs {
		if m.Role == "system" {
			n++
		}
	}
	if n == 0 {
		return systemPrompt, msgs
	}
	parts := make([]string, 0, n+1)
	if systemPrompt != "" {
		parts = append(parts, systemPrompt)
	}
	turns := make([]Message, 0, len(msgs)-n)
	for _, m := range msgs {
		if m.Role == "system" {
			if m.Content != "" {
				parts = append(parts, m.Content)
			}
			continue
		}
		turns = append(turns, m)
	}
	return strings.Join(parts, "\n\n"), turns
}
