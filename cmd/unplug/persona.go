package main

import (
	"github.com/spf13/pflag"

	"github.com/unplug-dev/unplug/stack/services"
)

// personaValue is the --persona NAME[:ARG] flag: parsed at once, so a bad
// persona is rejected before anything is created.
type personaValue struct{ p *services.Persona }

func (v personaValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}

func (v personaValue) Set(s string) error {
	p, err := services.ParsePersona(s)
	if err != nil {
		return err
	}
	*v.p = p
	return nil
}

func (v personaValue) Type() string { return "NAME[:ARG]" }

// addPersonaFlags registers serve's --persona flag on fs; it fills
// cfg.Persona, which stack.New applies to the peer.
func addPersonaFlags(fs *pflag.FlagSet, cfg *services.Config) {
	fs.Var(personaValue{&cfg.Persona}, "persona",
		"make the whole peer misbehave: silent[:PORT] (accept, never answer), reboot:AFTER (forget every connection: RSTs), "+
			"half-open:AFTER (forget every connection silently), slow-reader:BYTES_PER_SEC (read slowly: the window shrinks)")
}
