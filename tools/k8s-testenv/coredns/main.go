// CoreDNS with only the plugins the mesh's tests and benchmarks use, built the way CoreDNS
// documents for a custom build without plugin.cfg: import the plugins, set their order, run.
// Leaving out the other ~50 plugins (Kubernetes, cloud DNS, etcd, ...) keeps the build small.
package main

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// The execution order of CoreDNS's own plugin.cfg, restricted to the plugins above.
var directives = []string{
	"bind",
	"errors",
	"log",
	"cache",
	"template",
	"hosts",
	"file",
	"forward",
	"whoami",
}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		log.Fatalf("setting the CoreDNS plugin order: %v", err)
	}
	coremain.Run()
}
