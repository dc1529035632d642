package infra

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// What Flex Consumption accepts, and the deployment traps of issue 14 that
// live in the Bicep. Each test fails when its defect is put back.

// flexSiteConfig is all the site configuration the Flex sites here may set.
// FC1 sites reject other siteConfig properties such as ftpsState (BadRequest,
// extended code 51021, "site configuration properties ... for Flex
// Consumption sites is invalid"): shared/facts/azure-functions.md, Flex
// Consumption facts. The Flex sample (Azure-Samples/azure-functions-flex-
// consumption-samples, IaC/bicep) sets nothing else either.
var flexSiteConfig = map[string]bool{"minTlsVersion": true}

// flexRejected are site properties Flex Consumption rejects or ignores, as a
// key anywhere in the Bicep: the facts file's list (runtime and package come
// from functionAppConfig) and the Consumption-era scale and runtime settings
// that functionAppConfig replaces.
var flexRejected = map[string]bool{
	"ftpsState": true, "linuxFxVersion": true, "windowsFxVersion": true, "alwaysOn": true,
	"use32BitWorkerProcess": true, "functionAppScaleLimit": true, "minimumElasticInstanceCount": true,
	"preWarmedInstanceCount": true, "javaVersion": true, "netFrameworkVersion": true, "powerShellVersion": true,
	"containerSize": true, "dailyMemoryTimeQuota": true,
}

func TestFlexSitesSetOnlyWhatFlexAccepts(t *testing.T) {
	sites := 0
	for _, path := range bicepFiles(t) {
		rel, _ := filepath.Rel(filepath.Join(repoRoot(t), "infra"), path)
		f := loadFile(t, filepath.ToSlash(rel))
		for _, d := range f.resourcesOfType("Microsoft.Web/sites@") {
			if strings.Contains(d.node.Text, " existing") {
				continue
			}
			sites++
			for key := range props(prop(bodyObject(d.value), "properties", "siteConfig")) {
				if !flexSiteConfig[key] {
					t.Errorf("%s: site %s sets siteConfig.%s; Flex Consumption accepts only %v here", f.rel, d.name, key, sortedKeys(flexSiteConfig))
				}
			}
		}
		f.root.walk(func(n *node) bool {
			if n.Type == "object_property" && len(n.Children) > 1 && flexRejected[n.Children[0].Text] {
				t.Errorf("%s:%d: %s is rejected or ignored by Flex Consumption", f.rel, n.Line, n.Children[0].Text)
			}
			return true
		})
	}
	if sites == 0 {
		t.Fatal("no Microsoft.Web/sites resource found: nothing was checked")
	}
}

func decoratorInt(decorators, name string) (int, bool) {
	m := regexp.MustCompile(`@` + name + `\((\d+)\)`).FindStringSubmatch(decorators)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.Atoi(m[1])
	return n, true
}

// TestPlatformBounds: instance memory 512, 2048 or 4096 MB; maximumInstanceCount
// 40 to 1000 (Flex Consumption's custom stack: the Az.Functions module's
// FunctionsStackFlexData/<region>/custom.json, `az functionapp
// list-flexconsumption-runtimes --runtime custom`; shared/facts/azure-functions.md).
// Both where the parameter is declared (main.bicep, the module) and where a
// value is given (main.bicepparam).
func TestPlatformBounds(t *testing.T) {
	pf := loadFile(t, "main.bicepparam")
	set := map[string]*node{}
	for _, d := range pf.ofKind("variable_declaration") {
		set[d.name] = d.value
	}
	for _, rel := range []string{"main.bicep", "modules/functionapp.bicep"} {
		f := loadFile(t, rel)
		mem := f.must(t, "parameter_declaration", "instanceMemoryMB")
		if got := regexp.MustCompile(`\s+`).ReplaceAllString(strings.TrimSpace(allowedBlock(mem.decorate)), " "); got != "512 2048 4096" {
			t.Errorf("%s: instanceMemoryMB allows [%s], want exactly 512 2048 4096", rel, got)
		}
		count := f.must(t, "parameter_declaration", "maximumInstanceCount")
		lo, okLo := decoratorInt(count.decorate, "minValue")
		hi, okHi := decoratorInt(count.decorate, "maxValue")
		if !okLo || !okHi || lo != 40 || hi != 1000 {
			t.Errorf("%s: maximumInstanceCount bounds %d..%d (set: %v, %v), want @minValue(40) @maxValue(1000)", rel, lo, hi, okLo, okHi)
		}
		if count.value != nil {
			if n, err := strconv.Atoi(count.value.Text); err != nil || n < 40 || n > 1000 {
				t.Errorf("%s: maximumInstanceCount default %s outside 40..1000", rel, count.value.Text)
			}
		}
		if mem.value != nil && !contains([]string{"512", "2048", "4096"}, mem.value.Text) {
			t.Errorf("%s: instanceMemoryMB default %s", rel, mem.value.Text)
		}
	}
	if v := set["maximumInstanceCount"]; v != nil {
		if n, err := strconv.Atoi(v.Text); err != nil || n < 40 || n > 1000 {
			t.Errorf("main.bicepparam: maximumInstanceCount = %s, outside 40..1000", v.Text)
		}
	}
	if v := set["instanceMemoryMB"]; v != nil && !contains([]string{"512", "2048", "4096"}, v.Text) {
		t.Errorf("main.bicepparam: instanceMemoryMB = %s", v.Text)
	}
}

// allowedBlock returns the inside of an @allowed([...]) decorator.
func allowedBlock(decorators string) string {
	i := strings.Index(decorators, "@allowed([")
	if i < 0 {
		return ""
	}
	rest := decorators[i+len("@allowed(["):]
	if j := strings.Index(rest, "])"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestKeyVaultNameSalt: a deleted vault keeps its name for the soft-delete
// retention (purge protection forbids purging it sooner), so a resource
// group deleted and created again could not get its vault back. The salt
// gives a new name on demand; an empty salt keeps the name existing
// deployments already use (docs/deploy.md explains salt versus recover).
func TestKeyVaultNameSalt(t *testing.T) {
	main := loadFile(t, "main.bicep")
	salt := main.must(t, "parameter_declaration", "keyVaultNameSalt")
	if def, _ := unquote(salt.value); salt.value == nil || def != "" {
		t.Errorf("keyVaultNameSalt default = %s, want '' (the name earlier deployments used)", text(salt.value))
	}
	if got := text(main.must(t, "variable_declaration", "suffix").value); got != "uniqueString(resourceGroup().id)" {
		t.Errorf("suffix = %s, want uniqueString(resourceGroup().id)", got)
	}
	if got := text(main.must(t, "variable_declaration", "keyVaultSuffix").value); got != "empty(keyVaultNameSalt) ? suffix : uniqueString(resourceGroup().id, keyVaultNameSalt)" {
		t.Errorf("keyVaultSuffix = %s, want the old suffix without a salt and a salted one with it", got)
	}
	names := main.must(t, "variable_declaration", "names").value
	if got := text(prop(names, "keyVault")); got != "'kv${take(compactName, 9)}${keyVaultSuffix}'" {
		t.Errorf("names.keyVault = %s, want it derived from keyVaultSuffix", got)
	}
	pf := loadFile(t, "main.bicepparam")
	if d, ok := pf.get("variable_declaration", "keyVaultNameSalt"); !ok || !strings.HasPrefix(text(d.value), "readEnvironmentVariable('KEY_VAULT_NAME_SALT'") {
		t.Error("main.bicepparam must read keyVaultNameSalt from KEY_VAULT_NAME_SALT (deploy.sh's advice names it)")
	}
}

// TestModuleDeploymentNamesAreUnique: module deployments are resources of the
// resource group; fixed names make two deployments running at once overwrite
// each other. Each name derives from this deployment's own name.
func TestModuleDeploymentNamesAreUnique(t *testing.T) {
	main := loadFile(t, "main.bicep")
	if got := text(main.must(t, "variable_declaration", "deploymentPrefix").value); got != "take(deployment().name, 40)" {
		t.Errorf("deploymentPrefix = %s, want take(deployment().name, 40)", got)
	}
	seen := map[string]bool{}
	mods := main.ofKind("module_declaration")
	if len(mods) < 7 {
		t.Fatalf("main.bicep has %d modules", len(mods))
	}
	for _, m := range mods {
		name := prop(bodyObject(m.value), "name")
		s := text(name)
		suffix, ok := strings.CutPrefix(s, "'${deploymentPrefix}-")
		if !ok || !strings.HasSuffix(suffix, "'") || strings.Contains(suffix, "${") {
			t.Errorf("module %s name = %s, want '${deploymentPrefix}-<fixed part>'", m.name, s)
			continue
		}
		if seen[suffix] {
			t.Errorf("module %s: name %s used twice", m.name, s)
		}
		seen[suffix] = true
		// Deployment names are at most 64 characters.
		if n := 40 + 1 + len(strings.TrimSuffix(suffix, "'")); n > 64 {
			t.Errorf("module %s name can reach %d characters, over 64", m.name, n)
		}
	}
}

// TestWebhookQueueInfra (issue 15): the queue and its poison queue in the
// storage module, named by WEBHOOK_QUEUE with the contract's default; the
// identity's Storage Queue Data Contributor on that account is checked by
// TestRoleAssignments.
func TestWebhookQueueInfra(t *testing.T) {
	main := loadFile(t, "main.bicep")
	p := main.must(t, "parameter_declaration", "webhookQueueName")
	if def, _ := unquote(p.value); def != "webhook-deliveries" {
		t.Errorf("webhookQueueName default %q, want webhook-deliveries (the contract's WEBHOOK_QUEUE default)", def)
	}
	queues := elements(prop(bodyObject(main.must(t, "module_declaration", "storage").value), "params", "queueNames"))
	var got []string
	for _, q := range queues {
		got = append(got, q.Text)
	}
	if strings.Join(got, " ") != "webhookQueueName '${webhookQueueName}-poison'" {
		t.Errorf("storage queueNames = %v, want the queue and <queue>-poison (where the host moves a message after maxDequeueCount)", got)
	}
	st := loadFile(t, "modules/storage.bicep")
	qs := st.resourcesOfType("queues")
	if len(qs) != 1 || qs[0].value.Type != "for_statement" || !strings.Contains(qs[0].value.Text, "in queueNames") {
		t.Errorf("modules/storage.bicep: want one queues resource looping over queueNames")
	}
	if svc := st.resourcesOfType("queueServices"); len(svc) != 1 || text(prop(bodyObject(svc[0].value), "name")) != "'default'" {
		t.Errorf("modules/storage.bicep: want the queueServices 'default' holding the queues")
	}
	if roles := text(st.resolve(&node{Type: "identifier", Text: "storageRoles"})); !strings.Contains(roles, "roleIds.storageQueueDataContributor") {
		t.Errorf("storage roles %s lack Storage Queue Data Contributor: the trigger and the enqueue need it", roles)
	}

	// The trigger's connection resolves to the identity: <connection>__queueServiceUri,
	// __credential=managedidentity and __clientId (shared/facts/azure-functions.md,
	// queue trigger, Identity).
	settings := appSettings(t)
	triggers := 0
	for _, fn := range loadFunctions(t) {
		for _, raw := range bindingsRaw(t, fn) {
			var b struct {
				Type       string `json:"type"`
				Connection string `json:"connection"`
			}
			if err := json.Unmarshal(raw, &b); err != nil || b.Type != "queueTrigger" {
				continue
			}
			triggers++
			for _, suffix := range []string{"__queueServiceUri", "__credential", "__clientId"} {
				if _, ok := settings[b.Connection+suffix]; !ok {
					t.Errorf("functions/%s: connection %q needs the app setting %s%s", fn.name, b.Connection, b.Connection, suffix)
				}
			}
		}
	}
	if triggers == 0 {
		t.Error("no queueTrigger in functions/: the webhook delivery function is missing")
	}
}

// bindingsRaw returns a function.json's bindings as raw JSON objects.
func bindingsRaw(t *testing.T, fn function) []json.RawMessage {
	t.Helper()
	var fj struct {
		Bindings []json.RawMessage `json:"bindings"`
	}
	if err := json.Unmarshal(fn.raw, &fj); err != nil {
		t.Fatalf("functions/%s: %v", fn.name, err)
	}
	return fj.Bindings
}
