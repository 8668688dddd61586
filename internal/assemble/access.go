package assemble

import "encoding/json"

// ID returns the reply's id, "" before an event carried one.
func (a *Assembler) ID() string {
	var id string
	_ = json.Unmarshal(a.id, &id)
	return id
}

// Resumable reports whether the reply so far can be continued from its
// text: choice 0 has content and no tool call, and is the only choice. A
// reply cut inside its reasoning (no content yet) or a tool call cannot be
// continued by prefilling text.
func (a *Assembler) Resumable() bool {
	if len(a.choices) != 1 || a.choices[0].index != 0 {
		return false
	}
	c := a.choices[0]
	return len(c.content) > 0 && len(c.tools) == 0 && c.finish == nil
}
