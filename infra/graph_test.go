package infra

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// graphScopes are the Microsoft Graph delegated permissions the app
// registration requests, with their IDs as published in Microsoft's
// permissions reference (microsoft-graph-docs concepts/includes/permissions-ids.md).
var graphScopes = map[string]string{
	"User.Read":           "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
	"Files.ReadWrite.All": "863451e7-0667-486c-a5d6-d135439485f0",
	"offline_access":      "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
	"openid":              "37f7f235-527c-4136-accd-4a02d197296e",
	"profile":             "14dad69e-099b-42c9-810b-d002981feec1",
}

const microsoftGraphAppID = "00000003-0000-0000-c000-000000000000"

func TestGraphExtensionIsConfigured(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "infra", "bicepconfig.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Extensions map[string]string `json:"extensions"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("bicepconfig.json: %v", err)
	}
	if ref := cfg.Extensions["microsoftGraphV1"]; !strings.HasPrefix(ref, "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:") {
		t.Errorf("bicepconfig.json extensions.microsoftGraphV1 = %q, want the Microsoft Graph v1.0 extension from mcr.microsoft.com", ref)
	}
	// Every file with Graph resources declares the extension, and only those.
	decl := regexp.MustCompile(`(?m)^extension microsoftGraphV1\s*$`)
	for _, path := range bicepFiles(t) {
		rel, _ := filepath.Rel(filepath.Join(repoRoot(t), "infra"), path)
		f := loadFile(t, filepath.ToSlash(rel))
		uses := len(f.resourcesOfType("Microsoft.Graph/")) > 0
		if has := decl.MatchString(f.source); has != uses {
			t.Errorf("%s: declares the Graph extension: %v, has Graph resources: %v", f.rel, has, uses)
		}
	}
}

// TestAppRegistration is issue 8's cross-check: the registration's redirect
// URI is the handler's callback on the function host, the permissions are
// exactly the five scopes, and the federated credential's subject is the
// function app's identity.
func TestAppRegistration(t *testing.T) {
	reg := loadFile(t, "modules/app-registration.bicep")
	apps := reg.resourcesOfType("Microsoft.Graph/applications@v1.0")
	if len(apps) != 1 {
		t.Fatalf("want one Microsoft.Graph/applications@v1.0, got %d", len(apps))
	}
	app := bodyObject(apps[0].value)
	for k, want := range map[string]string{
		"uniqueName":     "uniqueName",
		"displayName":    "displayName",
		"signInAudience": "signInAudience",
	} {
		if got := text(prop(app, k)); got != want {
			t.Errorf("application %s = %s, want the %s parameter", k, got, want)
		}
	}
	for _, k := range []string{"spa", "publicClient", "passwordCredentials", "keyCredentials"} {
		if prop(app, k) != nil {
			t.Errorf("application sets %s: the redirect URI is Web only and no credential lives in the template", k)
		}
	}
	if got := text(prop(app, "isFallbackPublicClient")); got == "true" {
		t.Error("application is a public client; it must be confidential")
	}
	redirects := elements(prop(app, "web", "redirectUris"))
	if len(redirects) != 1 || redirects[0].Text != "redirectUri" {
		t.Errorf("web.redirectUris = %s, want [redirectUri]", text(prop(app, "web", "redirectUris")))
	}

	// Required permissions: Microsoft Graph, delegated, exactly the five.
	rra := elements(prop(app, "requiredResourceAccess"))
	if len(rra) != 1 {
		t.Fatalf("requiredResourceAccess has %d entries, want Microsoft Graph only", len(rra))
	}
	if id, _ := unquote(reg.resolve(prop(rra[0], "resourceAppId"))); id != microsoftGraphAppID {
		t.Errorf("resourceAppId = %q, want Microsoft Graph %s", id, microsoftGraphAppID)
	}
	var ids []string
	for _, ra := range elements(prop(rra[0], "resourceAccess")) {
		id, _ := unquote(prop(ra, "id"))
		typ, _ := unquote(prop(ra, "type"))
		if typ != "Scope" {
			t.Errorf("permission %s has type %q, want Scope (delegated)", id, typ)
		}
		ids = append(ids, id)
	}
	var want []string
	for _, id := range graphScopes {
		want = append(want, id)
	}
	sort.Strings(ids)
	sort.Strings(want)
	if missing, extra := diff(ids, want); len(missing) > 0 || len(extra) > 0 || len(ids) != len(want) {
		t.Errorf("delegated permission IDs: missing %v, unexpected %v (all: %v)", missing, extra, ids)
	}

	// The handler requests MICROSOFT_SCOPES plus openid and profile: the same five.
	main := loadFile(t, "main.bicep")
	scopes, ok := bicepDefault(main, appSettings(t)["MICROSOFT_SCOPES"])
	if !ok {
		t.Fatal("MICROSOFT_SCOPES is not a literal")
	}
	names := append(strings.Fields(scopes), "openid", "profile")
	sort.Strings(names)
	if missing, extra := diff(names, sortedKeys(graphScopes)); len(missing) > 0 || len(extra) > 0 {
		t.Errorf("MICROSOFT_SCOPES + openid profile = %v; the registration requests %v", names, sortedKeys(graphScopes))
	}

	// The service principal belongs to this application.
	sps := reg.resourcesOfType("Microsoft.Graph/servicePrincipals@v1.0")
	if len(sps) != 1 || text(prop(bodyObject(sps[0].value), "appId")) != apps[0].name+".appId" {
		t.Errorf("want one Microsoft.Graph/servicePrincipals with appId: %s.appId", apps[0].name)
	}

	// The federated credential: nested in the application, trusting the
	// identity principal ID it is given, with Entra ID's exchange audience.
	fics := reg.resourcesOfType("federatedIdentityCredentials@v1.0")
	if len(fics) != 1 {
		t.Fatalf("want one federatedIdentityCredentials nested in the application, got %d", len(fics))
	}
	fic := bodyObject(fics[0].value)
	if got := condition(fics[0]); got != "!empty(federatedIdentityPrincipalId)" {
		t.Errorf("federated credential condition = %q, want it only when an identity is given", got)
	}
	if got := text(prop(fic, "subject")); got != "federatedIdentityPrincipalId" {
		t.Errorf("federated credential subject = %s, want the federatedIdentityPrincipalId parameter", got)
	}
	if got := text(prop(fic, "issuer")); got != "federatedIdentityIssuer" {
		t.Errorf("federated credential issuer = %s, want the federatedIdentityIssuer parameter", got)
	}
	auds := elements(prop(fic, "audiences"))
	if len(auds) != 1 {
		t.Fatalf("federated credential audiences = %s, want exactly one", text(prop(fic, "audiences")))
	}
	if aud, _ := unquote(reg.resolve(auds[0])); aud != "api://AzureADTokenExchange" {
		t.Errorf("federated credential audience = %q, want api://AzureADTokenExchange", aud)
	}
	if name := text(prop(fic, "name")); !strings.HasPrefix(name, "'${"+apps[0].name+".uniqueName}/") {
		t.Errorf("federated credential name = %s, want <application uniqueName>/<name>", text(prop(fic, "name")))
	}

	// main.bicep wires it: created unless existingClientId, the callback URL
	// as redirect URI, the function app identity as subject, this tenant's
	// authority as issuer.
	mod := main.must(t, "module_declaration", "registration")
	if mod.typ != "modules/app-registration.bicep" {
		t.Fatalf("module registration uses %s", mod.typ)
	}
	if got := condition(mod); got != "createAppRegistration" {
		t.Errorf("registration condition = %q, want createAppRegistration", got)
	}
	if got := text(main.must(t, "variable_declaration", "createAppRegistration").value); got != "empty(existingClientId)" {
		t.Errorf("createAppRegistration = %s, want empty(existingClientId): an existing client ID means nothing is created", got)
	}
	params := prop(bodyObject(mod.value), "params")
	for k, want := range map[string]string{
		"redirectUri":                  "callbackUrl",
		"signInAudience":               "signInAudience",
		"uniqueName":                   "appRegistrationUniqueName",
		"federatedIdentityPrincipalId": "clientAuthMode == 'managed_identity' ? identity.outputs.principalId : ''",
		"federatedIdentityIssuer":      "'${loginEndpoint}${tenant().tenantId}/v2.0'",
	} {
		if got := text(prop(params, k)); got != want {
			t.Errorf("registration %s = %s, want %s", k, got, want)
		}
	}
	if got := text(main.must(t, "variable_declaration", "loginEndpoint").value); got != "environment().authentication.loginEndpoint" {
		t.Errorf("loginEndpoint = %s, want environment().authentication.loginEndpoint (https://login.microsoftonline.com/)", got)
	}
	if got := text(main.must(t, "variable_declaration", "clientId").value); got != "createAppRegistration ? registration!.outputs.clientId : existingClientId" {
		t.Errorf("clientId = %s: MICROSOFT_CLIENT_ID must come from the registration, or existingClientId in the old path", got)
	}
	if got := text(main.must(t, "variable_declaration", "clientAuthMode").value); got != "createAppRegistration ? clientAuth : 'secret'" {
		t.Errorf("clientAuthMode = %s: the old path (existingClientId) uses a secret", got)
	}
	uniq := main.must(t, "parameter_declaration", "appRegistrationUniqueName")
	if d := text(uniq.value); !strings.Contains(d, "uniqueString(resourceGroup().id)") || strings.Contains(d, "utcNow") || strings.Contains(d, "newGuid") {
		t.Errorf("appRegistrationUniqueName default %s must be stable across deployments", d)
	}
	aud := main.must(t, "parameter_declaration", "signInAudience")
	if def, _ := unquote(aud.value); def != "AzureADandPersonalMicrosoftAccount" {
		t.Errorf("signInAudience default = %q, want AzureADandPersonalMicrosoftAccount", def)
	}
	if allowed := allowedValues(aud.decorate); !contains(allowed, "AzureADMultipleOrgs") || !contains(allowed, "AzureADandPersonalMicrosoftAccount") {
		t.Errorf("signInAudience allows %v", allowed)
	}

	// One identity: the subject above, the app's identity, AZURE_CLIENT_ID
	// and the roles all come from the identity module, which has one identity.
	id := loadFile(t, "modules/identity.bicep")
	if n := len(id.resourcesOfType("Microsoft.ManagedIdentity/userAssignedIdentities@")); n != 1 {
		t.Errorf("modules/identity.bicep has %d identities, want 1", n)
	}
}

// TestRedirectURIIsTheHandlersCallback: the redirect URI Bicep registers and
// sets is https://<function host>/<route prefix>/<callback function route>,
// which the handler serves with GET.
func TestRedirectURIIsTheHandlersCallback(t *testing.T) {
	main := loadFile(t, "main.bicep")
	cb := main.must(t, "variable_declaration", "callbackUrl").value
	if cb.Type != "string" || len(cb.Children) != 3 || cb.Children[0].Text != "https://" || cb.Children[1].Type != "interpolation" {
		t.Fatalf("callbackUrl = %s, want 'https://${<host>}/<path>'", cb.Text)
	}
	if host := squash(cb.Children[1].Text); host != "${publicHost}" {
		t.Errorf("callbackUrl host = %s, want ${publicHost}", host)
	}
	if got := text(main.must(t, "variable_declaration", "publicHost").value); got != "empty(publicHostName) ? functionApp.outputs.defaultHostName : publicHostName" {
		t.Errorf("publicHost = %s, want the function app's host unless a custom one is given", got)
	}
	path := cb.Children[2].Text

	var callbackRoute string
	for _, fn := range loadFunctions(t) {
		if fn.name == "callback" && len(fn.bindings) > 0 {
			callbackRoute = fn.bindings[0].Route
		}
	}
	if want := "/" + loadHost(t).routePrefix() + "/" + callbackRoute; path != want {
		t.Errorf("redirect URI path %q, functions/callback serves %q", path, want)
	}
	routes, _ := handlerRoutes(t)
	if !containsRoute(routes, route{"GET", path}) {
		t.Errorf("the handler has no GET %s route for the redirect URI", path)
	}
	if o, ok := main.get("output_declaration", "redirectUri"); !ok || text(o.value) != "callbackUrl" {
		t.Error("output redirectUri must be callbackUrl")
	}
	if v := appSettings(t)["MICROSOFT_OAUTH_CALLBACK_URL"]; text(v) != "callbackUrl" {
		t.Errorf("MICROSOFT_OAUTH_CALLBACK_URL = %s, want callbackUrl (the registered URI, verbatim)", text(v))
	}
}

// allowedValues reads the strings of an @allowed([...]) decorator.
func allowedValues(decorators string) []string {
	i := strings.Index(decorators, "@allowed(")
	if i < 0 {
		return nil
	}
	rest := decorators[i:]
	if j := strings.Index(rest, "])"); j >= 0 {
		rest = rest[:j]
	}
	var out []string
	for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(rest, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestParametersFile: main.bicepparam targets main.bicep, sets only its
// parameters, every required one, within their allowed values, with the
// example domain and the secretless defaults.
func TestParametersFile(t *testing.T) {
	main := loadFile(t, "main.bicep")
	pf := loadFile(t, "main.bicepparam")
	using := pf.root.first("using_statement")
	if using == nil {
		t.Fatal("main.bicepparam has no using statement")
	}
	if target, _ := unquote(using.first("string")); target != "./main.bicep" {
		t.Errorf("using %q, want ./main.bicep", target)
	}
	// bicepsyntax reads `param x = v` in .bicepparam files as `var x = v`.
	set := map[string]*node{}
	for _, d := range pf.ofKind("variable_declaration") {
		set[d.name] = d.value
	}
	for name, v := range set {
		p, ok := main.get("parameter_declaration", name)
		if !ok {
			t.Errorf("main.bicepparam sets %s, which main.bicep does not declare", name)
			continue
		}
		if allowed := allowedValues(p.decorate); len(allowed) > 0 && v.Type == "string" {
			if s, _ := unquote(v); !contains(allowed, s) {
				t.Errorf("main.bicepparam: %s = %q, allowed %v", name, s, allowed)
			}
		}
	}
	for _, p := range main.ofKind("parameter_declaration") {
		if p.value == nil && set[p.name] == nil {
			t.Errorf("main.bicepparam does not set the required parameter %s", p.name)
		}
	}
	if urls, _ := unquote(set["allowedReturnUrls"]); !strings.HasPrefix(urls, "https://audits.megsupporttools.com/") {
		t.Errorf("allowedReturnUrls = %q, want the MEGDocs example domain", urls)
	}
	if mode, _ := unquote(set["clientAuth"]); mode != "managed_identity" {
		t.Errorf("clientAuth = %q: make deploy uses the secretless path by default", mode)
	}
	for name, env := range map[string]string{"adminPrincipalId": "ADMIN_PRINCIPAL_ID", "adminPrincipalType": "ADMIN_PRINCIPAL_TYPE"} {
		if got := text(set[name]); !strings.HasPrefix(got, "readEnvironmentVariable('"+env+"'") {
			t.Errorf("main.bicepparam %s = %s, want readEnvironmentVariable('%s', ...): deploy.sh exports it", name, got, env)
		}
	}
	if _, ok := set["existingClientId"]; ok {
		t.Error("main.bicepparam sets existingClientId: make deploy creates the registration by default")
	}
}
