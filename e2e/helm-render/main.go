// helm-render renders a Helm chart the way `helm template` does, without Helm: the same
// engines (Go's text/template and sprig v3), the same function map (sprig minus env and
// expandenv, plus include, tpl, required, fail, lookup, toYaml, fromYaml, toJson, fromJson),
// the same values coalescing (chart defaults < -f files < --set), the same top-level objects
// (.Values .Release .Chart .Capabilities .Files .Template) and the same post-processing
// (partials skipped, "<no value>" removed, documents split on "---", empty ones dropped,
// manifests ordered by Helm's install order). It exists so that CI can render
// charts/imagepush on a machine where Helm cannot be installed.
//
//	helm-render [flags] RELEASE CHART_DIR
//
// It builds offline from Debian's Go packages (GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helm-render ./e2e/helm-render
//
// values.schema.json is checked against the coalesced values with gojsonschema (what Helm 3
// used up to 3.17; Debian's golang-github-xeipuuv-gojsonschema-dev), its errors worded as Helm's.
// Hooks (helm.sh/hook, helm test pods) are printed after the release's manifests, as
// `helm template` prints them. Not supported (it fails rather than guess): subcharts, toToml.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// Values is Helm's chartutil.Values: the type of the top-level object and of .Values.
type Values map[string]interface{}

// PathValue returns the value at a dotted path ("Template.BasePath"), as Helm's does.
func (v Values) PathValue(p string) (interface{}, error) {
	parts := strings.Split(p, ".")
	var cur interface{} = map[string]interface{}(v)
	for _, k := range parts {
		m, ok := asMap(cur)
		if !ok {
			return nil, fmt.Errorf("%v is not a table", p)
		}
		val, ok := m[k]
		if !ok {
			return nil, fmt.Errorf("no value for key %q", p)
		}
		cur = val
	}
	return cur, nil
}

// AsMap is Helm's Values.AsMap.
func (v Values) AsMap() map[string]interface{} {
	if len(v) == 0 {
		return map[string]interface{}{}
	}
	return v
}

func asMap(v interface{}) (map[string]interface{}, bool) {
	switch m := v.(type) {
	case map[string]interface{}:
		return m, true
	case Values:
		return m, true
	}
	return nil, false
}

// Metadata is Chart.yaml, with the Go field names templates use (.Chart.Name, .Chart.AppVersion).
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []interface{}     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv *KubeVersion) String() string     { return kv.Version }
func (kv *KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type HelmVersion struct {
	Version      string `json:"version"`
	GitCommit    string `json:"git_commit"`
	GitTreeState string `json:"git_tree_state"`
	GoVersion    string `json:"go_version"`
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion HelmVersion
}

// Files is .Files: the chart's files outside templates/ and charts/.
type Files map[string][]byte

func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) Lines(name string) []string {
	s := string(f[name])
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}
func (f Files) Glob(pattern string) Files {
	out := Files{}
	for name, data := range f {
		if ok, _ := path.Match(pattern, name); ok {
			out[name] = data
		}
	}
	return out
}

// The API versions `helm template` assumes without a cluster (a subset of Helm's default set:
// the built-in groups this chart family may test for).
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"rbac.authorization.k8s.io/v1", "coordination.k8s.io/v1", "events.k8s.io/v1",
	"networking.k8s.io/v1", "apiextensions.k8s.io/v1", "admissionregistration.k8s.io/v1",
	"storage.k8s.io/v1", "scheduling.k8s.io/v1", "discovery.k8s.io/v1", "certificates.k8s.io/v1",
}

// Helm's releaseutil.InstallOrder.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
	"RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

// ---------------------------------------------------------------------------------------------
// The template engine (Helm's pkg/engine, same structure)
// ---------------------------------------------------------------------------------------------

type renderable struct {
	tpl      string
	vals     Values
	basePath string
}

const recursionMaxNums = 1000

func warnWrap(warn string) string { return "\n" + warn }

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "" // Helm swallows marshal errors inside templates
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := make(map[string]interface{})
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// baseFuncMap is Helm's funcMap(): sprig's text functions without env/expandenv, plus Helm's own.
func baseFuncMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	extra := template.FuncMap{
		"toToml": func(interface{}) (string, error) {
			return "", errors.New("toToml is not supported by helm-render")
		},
		"toYaml":        toYAML,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		// Bound per render below; placeholders keep the parse step happy, as in Helm.
		"include":  func(string, interface{}) string { return "not implemented" },
		"tpl":      func(string, interface{}) interface{} { return "not implemented" },
		"required": func(string, interface{}) (interface{}, error) { return "not implemented", nil },
		// Without a cluster, lookup finds nothing (what `helm template` does).
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func initFuncMap(t *template.Template, referenceTpls map[string]renderable) {
	funcMap := baseFuncMap()
	includedNames := make(map[string]int)

	funcMap["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if v, ok := includedNames[name]; ok {
			if v > recursionMaxNums {
				return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
			}
			includedNames[name]++
		} else {
			includedNames[name] = 1
		}
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}

	funcMap["tpl"] = func(tpl string, vals Values) (string, error) {
		basePath, err := vals.PathValue("Template.BasePath")
		if err != nil {
			return "", fmt.Errorf("cannot retrieve Template.Basepath from values inside tpl function: %s: %w", tpl, err)
		}
		templateName, err := vals.PathValue("Template.Name")
		if err != nil {
			return "", fmt.Errorf("cannot retrieve Template.Name from values inside tpl function: %s: %w", tpl, err)
		}
		templates := map[string]renderable{
			templateName.(string): {tpl: tpl, vals: vals, basePath: basePath.(string)},
		}
		result, err := renderWithReferences(templates, referenceTpls)
		if err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", tpl, err)
		}
		return result[templateName.(string)], nil
	}

	funcMap["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warnWrap(warn))
		} else if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warnWrap(warn))
		}
		return val, nil
	}

	funcMap["fail"] = func(msg string) (string, error) {
		return "", errors.New(warnWrap(msg))
	}

	// `helm template` does not resolve DNS unless asked.
	funcMap["getHostByName"] = func(name string) string { return "" }

	t.Funcs(funcMap)
}

// byPathLen orders template names as Helm's sortTemplates does (reversed below).
type byPathLen []string

func (p byPathLen) Len() int      { return len(p) }
func (p byPathLen) Swap(i, j int) { p[j], p[i] = p[i], p[j] }
func (p byPathLen) Less(i, j int) bool {
	a, b := p[i], p[j]
	ca, cb := strings.Count(a, "/"), strings.Count(b, "/")
	if ca == cb {
		return strings.Compare(a, b) == -1
	}
	return ca < cb
}

func sortTemplates(tpls map[string]renderable) []string {
	keys := make([]string, 0, len(tpls))
	for k := range tpls {
		keys = append(keys, k)
	}
	sort.Sort(sort.Reverse(byPathLen(keys)))
	return keys
}

func renderWithReferences(tpls, referenceTpls map[string]renderable) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	initFuncMap(t, referenceTpls)

	keys := sortTemplates(tpls)
	referenceKeys := sortTemplates(referenceTpls)
	for _, filename := range keys {
		if _, err := t.New(filename).Parse(tpls[filename].tpl); err != nil {
			return nil, fmt.Errorf("parse error in %s: %w", filename, err)
		}
	}
	for _, filename := range referenceKeys {
		if t.Lookup(filename) == nil {
			if _, err := t.New(filename).Parse(referenceTpls[filename].tpl); err != nil {
				return nil, fmt.Errorf("parse error in %s: %w", filename, err)
			}
		}
	}

	rendered = make(map[string]string, len(keys))
	for _, filename := range keys {
		if strings.HasPrefix(path.Base(filename), "_") {
			continue // partials are only included
		}
		vals := tpls[filename].vals
		vals["Template"] = Values{"Name": filename, "BasePath": tpls[filename].basePath}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, filename, vals); err != nil {
			return nil, fmt.Errorf("execution error in %s: %w", filename, err)
		}
		rendered[filename] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

// ---------------------------------------------------------------------------------------------
// Values: defaults, -f files, --set (Helm's chartutil.CoalesceValues and strvals, the subset
// charts use)
// ---------------------------------------------------------------------------------------------

func readValuesFile(p string) (map[string]interface{}, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

// mergeMaps is Helm's cli/values mergeMaps: b over a, recursing into tables.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bvm, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bvm, vm)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// coalesce fills dst (user values) from src (chart defaults); a null in dst deletes the key.
func coalesce(dst, src map[string]interface{}, prefix string) {
	for key, sv := range src {
		dv, ok := dst[key]
		if !ok {
			dst[key] = sv
			continue
		}
		if dv == nil {
			delete(dst, key)
			continue
		}
		dm, dIsMap := dv.(map[string]interface{})
		sm, sIsMap := sv.(map[string]interface{})
		if dIsMap && sIsMap {
			coalesce(dm, sm, prefix+key+".")
		} else if dIsMap != sIsMap && sv != nil {
			fmt.Fprintf(os.Stderr, "coalesce.go: warning: cannot overwrite table with non table for %s%s (%v)\n", prefix, key, sv)
		}
	}
	// Nulls the user set for keys the chart does not have are dropped too.
	for key, dv := range dst {
		if dv == nil {
			if _, inSrc := src[key]; !inSrc {
				delete(dst, key)
			}
		}
	}
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []interface{}:
		a := make([]interface{}, len(t))
		for i, x := range t {
			a[i] = deepCopy(x)
		}
		return a
	}
	return v
}

// splitUnescaped splits s on sep, honouring backslash escapes (kept for the next stage).
func splitUnescaped(s string, sep rune, braces bool) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	esc := false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune('\\')
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case braces && r == '{':
			depth++
			cur.WriteRune(r)
		case braces && r == '}':
			depth--
			cur.WriteRune(r)
		case r == sep && depth == 0:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if esc {
		cur.WriteRune('\\')
	}
	return append(out, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	esc := false
	for _, r := range s {
		if !esc && r == '\\' {
			esc = true
			continue
		}
		esc = false
		b.WriteRune(r)
	}
	return b.String()
}

// typedVal is strvals' typing of a --set value.
func typedVal(val string, forceString bool) interface{} {
	if forceString {
		return val
	}
	switch strings.ToLower(val) {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if val == "0" {
		return int64(0)
	}
	if len(val) != 0 && val[0] != '0' {
		if iv, err := strconv.ParseInt(val, 10, 64); err == nil {
			return iv
		}
	}
	return val
}

var indexRe = regexp.MustCompile(`^(.*)\[([0-9]+)\]$`)

// setPath sets keys (a.b[1].c) to val in m.
func setPath(m map[string]interface{}, key string, val interface{}) error {
	parts := splitUnescaped(key, '.', false)
	cur := m
	for i, raw := range parts {
		last := i == len(parts)-1
		name := unescape(raw)
		if mm := indexRe.FindStringSubmatch(raw); mm != nil {
			name = unescape(mm[1])
			idx, _ := strconv.Atoi(mm[2])
			list, _ := cur[name].([]interface{})
			for len(list) <= idx {
				list = append(list, nil)
			}
			if last {
				list[idx] = val
				cur[name] = list
				return nil
			}
			next, ok := list[idx].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				list[idx] = next
			}
			cur[name] = list
			cur = next
			continue
		}
		if name == "" {
			return fmt.Errorf("key %q has an empty part", key)
		}
		if last {
			cur[name] = val
			return nil
		}
		next, ok := cur[name].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			cur[name] = next
		}
		cur = next
	}
	return nil
}

// parseSet applies one --set (or --set-string) argument: a=b,c.d=e,list={x,y},e[0]=f.
func parseSet(m map[string]interface{}, s string, forceString bool) error {
	for _, pair := range splitUnescaped(s, ',', true) {
		if pair == "" {
			continue
		}
		kv := splitUnescaped(pair, '=', true)
		if len(kv) < 2 {
			return fmt.Errorf("key %q has no value", pair)
		}
		key, raw := kv[0], strings.Join(kv[1:], "=")
		var val interface{}
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			items := []interface{}{}
			inner := raw[1 : len(raw)-1]
			if inner != "" {
				for _, it := range splitUnescaped(inner, ',', false) {
					items = append(items, typedVal(unescape(it), forceString))
				}
			}
			val = items
		} else {
			val = typedVal(unescape(raw), forceString)
		}
		if err := setPath(m, key, val); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Loading the chart
// ---------------------------------------------------------------------------------------------

type chart struct {
	dir       string
	meta      Metadata
	values    map[string]interface{}
	templates map[string]string // "templates/x.yaml" -> text
	crds      []string          // "crds/x.yaml", sorted
	files     Files
	schema    []byte // values.schema.json, if the chart has one
}

func loadChart(dir string) (*chart, error) {
	c := &chart{dir: dir, templates: map[string]string{}, files: Files{}}
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(raw, &c.meta); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	switch {
	case c.meta.APIVersion != "v2" && c.meta.APIVersion != "v1":
		return nil, fmt.Errorf("Chart.yaml: apiVersion must be v2 (got %q)", c.meta.APIVersion)
	case c.meta.Name == "":
		return nil, errors.New("Chart.yaml: name is required")
	case c.meta.Version == "":
		return nil, errors.New("Chart.yaml: version is required")
	case c.meta.Type != "" && c.meta.Type != "application":
		return nil, fmt.Errorf("Chart.yaml: type %q cannot be rendered", c.meta.Type)
	case len(c.meta.Dependencies) > 0:
		return nil, errors.New("Chart.yaml: dependencies (subcharts) are not supported by helm-render")
	}
	if _, err := semver.StrictNewVersion(c.meta.Version); err != nil {
		return nil, fmt.Errorf("Chart.yaml: version %q is not a valid SemVer 2 version: %w", c.meta.Version, err)
	}
	c.values = map[string]interface{}{}
	if data, err := os.ReadFile(filepath.Join(dir, "values.yaml")); err == nil {
		if err := yaml.Unmarshal(data, &c.values); err != nil {
			return nil, fmt.Errorf("values.yaml: %w", err)
		}
		if c.values == nil {
			c.values = map[string]interface{}{}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "charts")); err == nil && len(entries) > 0 {
		return nil, errors.New("charts/ (subcharts) is not supported by helm-render")
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case rel == "Chart.yaml" || rel == "values.yaml" || rel == ".helmignore":
		case rel == "values.schema.json":
			c.schema = data
		case strings.HasPrefix(rel, "templates/"):
			c.templates[rel] = string(data)
		default:
			if strings.HasPrefix(rel, "crds/") {
				c.crds = append(c.crds, rel)
			}
			c.files[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(c.crds)
	return c, nil
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

var sep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

// splitManifests is Helm's releaseutil.SplitManifests, keeping document order.
func splitManifests(bigFile string) []string {
	var out []string
	bigFileTmp := strings.TrimSpace(bigFile)
	for _, d := range sep.Split(bigFileTmp, -1) {
		if strings.TrimSpace(d) == "" {
			continue
		}
		out = append(out, strings.TrimSpace(d)+"\n")
	}
	return out
}

type manifest struct {
	source string
	text   string
	kind   string
	obj    map[string]interface{}
	hook   bool // a helm.sh/hook: printed after the release's manifests, as helm template does
}

// checkValues validates the coalesced values against the chart's values.schema.json (JSON
// Schema, with the library Helm 3 used up to 3.17), reporting every failure as Helm does.
func checkValues(c *chart, vals map[string]interface{}) error {
	if c.schema == nil {
		return nil
	}
	doc, err := json.Marshal(vals)
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(c.schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("%s: values.schema.json: %w", c.meta.Name, err)
	}
	if result.Valid() {
		return nil
	}
	var b strings.Builder
	b.WriteString("values don't meet the specifications of the schema(s) in the following chart(s):\n")
	b.WriteString(c.meta.Name + ":\n")
	for _, e := range result.Errors() {
		b.WriteString("- " + e.String() + "\n")
	}
	return errors.New(b.String())
}

func parseManifest(source, text string) (*manifest, error) {
	j, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("%s: YAML parse error: %w\n%s", source, err, text)
	}
	m := &manifest{source: source, text: text}
	if string(bytes.TrimSpace(j)) == "null" {
		return m, nil // only comments
	}
	if err := json.Unmarshal(j, &m.obj); err != nil {
		return nil, fmt.Errorf("%s: a manifest must be a mapping: %w\n%s", source, err, text)
	}
	kind, _ := m.obj["kind"].(string)
	apiVersion, _ := m.obj["apiVersion"].(string)
	if kind == "" || apiVersion == "" {
		return nil, fmt.Errorf("%s: manifest without kind or apiVersion:\n%s", source, text)
	}
	if meta, ok := m.obj["metadata"].(map[string]interface{}); !ok || meta["name"] == nil || meta["name"] == "" {
		return nil, fmt.Errorf("%s: %s without metadata.name:\n%s", source, kind, text)
	}
	if meta, _ := m.obj["metadata"].(map[string]interface{}); meta != nil {
		if ann, _ := meta["annotations"].(map[string]interface{}); ann != nil && ann["helm.sh/hook"] != nil {
			m.hook = true
		}
	}
	m.kind = kind
	return m, nil
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("helm-render", flag.ContinueOnError)
	var valueFiles, sets, setStrings, apiVersions multi
	fs.Var(&valueFiles, "f", "values file (repeatable; later files win)")
	fs.Var(&valueFiles, "values", "same as -f")
	fs.Var(&sets, "set", "set values (a.b=c,d={x,y}); repeatable")
	fs.Var(&setStrings, "set-string", "set STRING values; repeatable")
	fs.Var(&apiVersions, "a", "extra API version for .Capabilities.APIVersions (repeatable)")
	fs.Var(&apiVersions, "api-versions", "same as -a")
	namespace := fs.String("namespace", "default", ".Release.Namespace")
	fs.StringVar(namespace, "n", "default", "same as --namespace")
	kubeVersion := fs.String("kube-version", "v1.31.0", ".Capabilities.KubeVersion")
	output := fs.String("o", "yaml", "yaml (like helm template) or json (an array of objects)")
	includeCRDs := fs.Bool("include-crds", false, "also print the chart's crds/ (before the templates)")
	showOnly := fs.String("show-only", "", "print only the manifests of this template (templates/x.yaml)")

	// Flags may come before, between or after the two positional arguments.
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(positional) != 2 {
		return errors.New("usage: helm-render [flags] RELEASE_NAME CHART_DIR")
	}
	release, dir := positional[0], positional[1]
	if *output != "yaml" && *output != "json" {
		return fmt.Errorf("-o must be yaml or json, not %q", *output)
	}

	c, err := loadChart(dir)
	if err != nil {
		return err
	}

	// User values: -f files merged in order, then --set, then --set-string.
	user := map[string]interface{}{}
	for _, f := range valueFiles {
		m, err := readValuesFile(f)
		if err != nil {
			return err
		}
		user = mergeMaps(user, m)
	}
	for _, s := range sets {
		if err := parseSet(user, s, false); err != nil {
			return fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	for _, s := range setStrings {
		if err := parseSet(user, s, true); err != nil {
			return fmt.Errorf("failed parsing --set-string data: %w", err)
		}
	}
	vals := deepCopy(user).(map[string]interface{})
	coalesce(vals, deepCopy(c.values).(map[string]interface{}), "")
	if err := checkValues(c, vals); err != nil {
		return err
	}

	kv, err := semver.NewVersion(*kubeVersion)
	if err != nil {
		return fmt.Errorf("--kube-version %q: %w", *kubeVersion, err)
	}
	if c.meta.KubeVersion != "" {
		constraint, err := semver.NewConstraint(c.meta.KubeVersion)
		if err != nil {
			return fmt.Errorf("Chart.yaml: kubeVersion %q: %w", c.meta.KubeVersion, err)
		}
		if !constraint.Check(kv) {
			return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c.meta.KubeVersion, *kubeVersion)
		}
	}
	caps := &Capabilities{
		KubeVersion: KubeVersion{
			Version: "v" + kv.String(),
			Major:   strconv.FormatUint(kv.Major(), 10),
			Minor:   strconv.FormatUint(kv.Minor(), 10),
		},
		APIVersions: append(VersionSet{}, append(defaultAPIVersions, apiVersions...)...),
		HelmVersion: HelmVersion{Version: "v3.16.0+helm-render"},
	}

	meta := c.meta
	top := Values{
		"Values": Values(vals),
		"Release": map[string]interface{}{
			"Name":      release,
			"Namespace": *namespace,
			"IsUpgrade": false,
			"IsInstall": true,
			"Revision":  1,
			"Service":   "Helm",
		},
		"Chart":        &meta,
		"Capabilities": caps,
		"Files":        c.files,
		"Subcharts":    map[string]interface{}{},
	}

	tpls := map[string]renderable{}
	for rel, text := range c.templates {
		tpls[path.Join(c.meta.Name, rel)] = renderable{
			tpl:      text,
			vals:     top,
			basePath: path.Join(c.meta.Name, "templates"),
		}
	}
	rendered, err := renderWithReferences(tpls, tpls)
	if err != nil {
		return err
	}

	var manifests []*manifest
	names := make([]string, 0, len(rendered))
	for name := range rendered {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		if *showOnly != "" && name != path.Join(c.meta.Name, *showOnly) {
			continue
		}
		for _, doc := range splitManifests(rendered[name]) {
			m, err := parseManifest(name, doc)
			if err != nil {
				return err
			}
			manifests = append(manifests, m)
		}
	}
	sort.SliceStable(manifests, func(i, j int) bool {
		return kindRank(manifests[i].kind) < kindRank(manifests[j].kind)
	})
	// Hooks (helm test pods among them) after the release's own objects.
	sort.SliceStable(manifests, func(i, j int) bool { return !manifests[i].hook && manifests[j].hook })

	var crds []*manifest
	if *includeCRDs {
		for _, rel := range c.crds {
			for _, doc := range splitManifests(string(c.files[rel])) {
				m, err := parseManifest(path.Join(c.meta.Name, rel), doc)
				if err != nil {
					return err
				}
				crds = append(crds, m)
			}
		}
	}
	all := append(crds, manifests...)

	if *output == "json" {
		objs := []interface{}{}
		for _, m := range all {
			if m.obj != nil {
				objs = append(objs, m.obj)
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(objs)
	}
	for _, m := range all {
		fmt.Fprintf(stdout, "---\n# Source: %s\n%s", m.source, m.text)
	}
	return nil
}
