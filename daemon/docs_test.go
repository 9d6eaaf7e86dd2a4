package daemon

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The README and docs/ name flags, metrics and make targets; these tests
// keep each name true. (That every metric a live daemon exports is in the
// README's table is e2e's checkMetrics; here the other way round: every
// metric the documents name is one the code registers.)

// foreignFlags are other programs' flags the documents name, each with
// its program: the only double-dash names that need not be flannelu's.
var foreignFlags = map[string]string{
	"help":                "Go's flag package (prints the usage)",
	"random-fully":        "iptables",
	"comment":             "iptables",
	"mark":                "iptables",
	"cluster-cidr":        "kube-controller-manager",
	"allocate-node-cidrs": "kube-controller-manager",
	"build-arg":           "docker build",
}

var (
	docFlag   = regexp.MustCompile(`(?:^|[^A-Za-z0-9_-])--([a-z][a-z0-9-]*)(\*?)`)
	docMetric = regexp.MustCompile(`flannelu_[a-z0-9_]+`)
	docMake   = regexp.MustCompile("(?m)(?:`|^\\s*)make ([a-z][a-z0-9-]*)")
	makeRule  = regexp.MustCompile(`(?m)^([a-zA-Z0-9_.-]+)\s*:`)
)

// documents are the README and every page of docs/, by path.
func documents(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	for _, p := range append([]string{"../README.md"}, paths...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs[strings.TrimPrefix(p, "../")] = string(b)
	}
	return docs
}

// TestDocumentedFlagsExist: every --flag the documents name is one of the
// daemon's flags (or another program's, named in foreignFlags); "--udp-*"
// must be the prefix of one.
func TestDocumentedFlagsExist(t *testing.T) {
	flags := newFlagSet(&Options{}, io.Discard)
	for path, text := range documents(t) {
		for _, m := range docFlag.FindAllStringSubmatch(text, -1) {
			name, wildcard := m[1], m[2] == "*"
			if _, ok := foreignFlags[name]; ok || flags.Lookup(name) != nil {
				continue
			}
			if wildcard && hasFlagPrefix(flags, name) {
				continue
			}
			t.Errorf("%s names --%s%s, which flannelu does not have", path, name, m[2])
		}
	}
}

// hasFlagPrefix says whether a flag's name starts with prefix.
func hasFlagPrefix(flags *flag.FlagSet, prefix string) (found bool) {
	flags.VisitAll(func(f *flag.Flag) { found = found || strings.HasPrefix(f.Name, prefix) })
	return found
}

// TestDocumentedMetricsRegistered: every flannelu_* metric the documents
// name is registered by production code (a Registry's Counter,
// CounterFunc, Gauge, GaugeFunc or CounterVec with that name).
func TestDocumentedMetricsRegistered(t *testing.T) {
	registered := registeredMetrics(t)
	if len(registered) < 10 {
		t.Fatalf("found only %d registered metrics (%v): the scan is broken", len(registered), registered)
	}
	for path, text := range documents(t) {
		for _, name := range docMetric.FindAllString(text, -1) {
			if !registered[name] {
				t.Errorf("%s names %s, which no production code registers", path, name)
			}
		}
	}
}

// TestDocumentedMakeTargetsExist: every `make target` the documents name
// is a rule of the Makefile.
func TestDocumentedMakeTargetsExist(t *testing.T) {
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range makeRule.FindAllStringSubmatch(string(b), -1) {
		targets[m[1]] = true
	}
	for path, text := range documents(t) {
		for _, m := range docMake.FindAllStringSubmatch(text, -1) {
			if !targets[m[1]] {
				t.Errorf("%s names make %s, which the Makefile has no rule for", path, m[1])
			}
		}
	}
}

// registerCalls are the Registry methods that register a family.
var registerCalls = []string{"Counter", "CounterFunc", "Gauge", "GaugeFunc", "CounterVec"}

// registeredMetrics scans the module's production Go files (no tests,
// test rigs, benchmarks or the demo) for registrations by name.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testbed", "e2e", "bench", "demo", "bin", ".cache", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if name, ok := registeredName(n); ok {
				names[name] = true
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// registeredName is the family a registration call names with a string
// literal.
func registeredName(n ast.Node) (string, bool) {
	call, ok := n.(*ast.CallExpr)
	if !ok || len(call.Args) == 0 {
		return "", false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || !slices.Contains(registerCalls, sel.Sel.Name) {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	name, err := strconv.Unquote(lit.Value)
	return name, err == nil && strings.HasPrefix(name, "flannelu_")
}

// unlandedDocs are pages the documents link that another branch adds;
// an entry goes once the page is in the tree.
var unlandedDocs = map[string]bool{}

var (
	docLink   = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	docTitle  = regexp.MustCompile("(?m)^#+ (.+)$")
	slugStrip = regexp.MustCompile(`[^a-z0-9 _-]`)
)

// TestDocumentedLinksResolve: every relative link of the documents names
// a file of the repository, and its #anchor a heading of that file (as
// GitHub makes anchors of headings).
func TestDocumentedLinksResolve(t *testing.T) {
	for path, text := range documents(t) {
		for _, m := range docLink.FindAllStringSubmatch(text, -1) {
			target, anchor, _ := strings.Cut(m[1], "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file := path
			if target != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(path), target))
			}
			if unlandedDocs[file] {
				continue
			}
			b, err := os.ReadFile("../" + file)
			if err != nil {
				t.Errorf("%s links %s: %v", path, m[1], err)
				continue
			}
			if anchor != "" && !slices.Contains(anchors(string(b)), anchor) {
				t.Errorf("%s links %s: %s has no heading with anchor #%s", path, m[1], file, anchor)
			}
		}
	}
}

// anchors are the anchors GitHub gives a Markdown file's headings.
func anchors(text string) []string {
	var out []string
	for _, m := range docTitle.FindAllStringSubmatch(text, -1) {
		s := slugStrip.ReplaceAllString(strings.ToLower(strings.ReplaceAll(m[1], "`", "")), "")
		out = append(out, strings.ReplaceAll(s, " ", "-"))
	}
	return out
}

// TestLayoutNamesEveryPackage: docs/design.md's layout names every
// package of the tree, so a newcomer finds each one there.
func TestLayoutNamesEveryPackage(t *testing.T) {
	design := documents(t)["docs/design.md"]
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		switch d.Name() {
		case "bin", ".cache", ".git", "testdata", "docs", "deploy", "scripts":
			return filepath.SkipDir
		}
		pkg := filepath.ToSlash(strings.TrimPrefix(path, "../"))
		if goFiles, _ := filepath.Glob(filepath.Join(path, "*.go")); len(goFiles) > 0 && !strings.Contains(design, "`"+pkg+"`") {
			t.Errorf("docs/design.md's layout does not name %s", pkg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
