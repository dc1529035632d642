#!/usr/bin/env bash
# Deploys the MEGDocs Microsoft connector with the Azure CLI (`make deploy`):
#   1. infra/main.bicep into a resource group (created when missing), which
#      also creates the Entra app registration unless existingClientId is set;
#   2. dist/app.zip to the function app, retrying while the new role
#      assignments propagate (the first upload can get 403);
#   3. the secrets the service needs, generated here and written straight to
#      Key Vault (never printed, never in app settings); existing ones are kept.
# It ends with the redirect URI, the secret commands for later rotation and
# the one step left by hand: admin consent where a tenant requires it.
#
# Environment (all optional):
#   RESOURCE_GROUP        resource group (default rg-megdocs-msconnector)
#   LOCATION              region, needed only when the resource group does not exist yet
#   DEPLOY_PARAMS         parameters file (default infra/main.bicepparam)
#   APP_ZIP               package to deploy (default dist/app.zip; `make package` builds it)
#   DEPLOYMENT_NAME       ARM deployment name (default msconnector-<UTC time>)
#   ADMIN_PRINCIPAL_ID    object ID given Key Vault Secrets Officer (default: the signed-in
#                         principal); ADMIN_PRINCIPAL_TYPE User, Group or ServicePrincipal
#   SECRET_VALIDITY_DAYS  lifetime of a client secret made here, secret mode only (default 365)
#   DEPLOY_RETRIES        zip upload attempts while forbidden (default 10)
#   DEPLOY_RETRY_DELAY    seconds between attempts (default 30)
set -euo pipefail

RESOURCE_GROUP="${RESOURCE_GROUP:-rg-megdocs-msconnector}"
LOCATION="${LOCATION:-}"
DEPLOY_PARAMS="${DEPLOY_PARAMS:-infra/main.bicepparam}"
APP_ZIP="${APP_ZIP:-dist/app.zip}"
DEPLOYMENT_NAME="${DEPLOYMENT_NAME:-msconnector-$(date -u +%Y%m%d-%H%M%S)}"
ADMIN_PRINCIPAL_ID="${ADMIN_PRINCIPAL_ID:-}"
SECRET_VALIDITY_DAYS="${SECRET_VALIDITY_DAYS:-365}"
DEPLOY_RETRIES="${DEPLOY_RETRIES:-10}"
DEPLOY_RETRY_DELAY="${DEPLOY_RETRY_DELAY:-30}"

die() {
	echo "deploy: $*" >&2
	exit 1
}

step() {
	echo "==> $*"
}

# forbidden reports whether an az error is an authorization failure that a
# role assignment still propagating explains.
forbidden() {
	grep -qiE 'forbidden|AuthorizationFailed|AuthorizationPermissionMismatch|[^0-9a-z-]403[^0-9a-z-]' <<<" $1 "
}

# lower prints its argument in lower case (bash 3.2, as on macOS, has no ${x,,}).
lower() {
	tr '[:upper:]' '[:lower:]' <<<"$1"
}

# version_at_least A B: whether dotted version A >= B.
version_at_least() {
	[[ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n1)" == "$2" ]]
}

# date_in_days prints the UTC time N days from now in ISO 8601 (GNU or BSD date).
date_in_days() {
	date -u -d "+$1 days" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+"$1"d +%Y-%m-%dT%H:%M:%SZ
}

# ---- preflight ----

command -v az >/dev/null 2>&1 ||
	die "the Azure CLI (az) is not installed: see https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v openssl >/dev/null 2>&1 ||
	die "openssl is not installed: it generates the encryption and CMS keys"
account_type="$(az account show --query user.type -o tsv 2>/dev/null)" ||
	die "the Azure CLI is not logged in: run 'az login' (and 'az account set --subscription <id>'), then make deploy again"
[[ -f "$APP_ZIP" ]] || die "$APP_ZIP not found: run make package first"
[[ -f "$DEPLOY_PARAMS" ]] || die "$DEPLOY_PARAMS not found"

# The Microsoft Graph Bicep extension (the app registration) needs Bicep 0.36.1 or later.
if ! bicep_version="$(az bicep version 2>/dev/null)"; then
	step "installing the Bicep CLI for az"
	az bicep install --output none
	bicep_version="$(az bicep version)"
fi
bicep_version="$(grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$bicep_version" | head -n1)"
version_at_least "${bicep_version:-0.0.0}" 0.36.1 ||
	die "Bicep CLI ${bicep_version:-unknown} is too old for the Microsoft Graph extension (0.36.1 or later): run 'az bicep upgrade'"

subscription="$(az account show --query name -o tsv)"
step "subscription: $subscription; resource group: $RESOURCE_GROUP; parameters: $DEPLOY_PARAMS"

if [[ -z "$ADMIN_PRINCIPAL_ID" ]]; then
	if [[ "$account_type" == "servicePrincipal" ]]; then
		ADMIN_PRINCIPAL_ID="$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)"
		admin_type=ServicePrincipal
	else
		ADMIN_PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"
		admin_type=User
	fi
else
	admin_type="${ADMIN_PRINCIPAL_TYPE:-User}"
fi

if ! az group show --name "$RESOURCE_GROUP" --output none 2>/dev/null; then
	[[ -n "$LOCATION" ]] ||
		die "resource group $RESOURCE_GROUP does not exist: set LOCATION (a region with Flex Consumption, e.g. westeurope) to create it"
	step "creating resource group $RESOURCE_GROUP in $LOCATION"
	az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none
fi

# ---- 1. infrastructure ----

step "deploying infrastructure ($DEPLOYMENT_NAME); this takes a few minutes"
# The parameters file reads these with readEnvironmentVariable().
export ADMIN_PRINCIPAL_ID ADMIN_PRINCIPAL_TYPE="$admin_type"
az deployment group create \
	--resource-group "$RESOURCE_GROUP" \
	--name "$DEPLOYMENT_NAME" \
	--parameters "$DEPLOY_PARAMS" \
	--output none

output_names=(functionAppName functionBaseUrl redirectUri keyVaultName microsoftClientId clientAuthMode appRegistrationManaged signInAudience cmsWebhookEnabled)
query="["
for n in "${output_names[@]}"; do
	query+="properties.outputs.$n.value,"
done
query="${query%,}]"
raw="$(az deployment group show --resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT_NAME" --query "$query" --output tsv)"
IFS=$'\t\n' read -r -d '' -a outputs <<<"$raw" || true
((${#outputs[@]} == ${#output_names[@]})) ||
	die "deployment $DEPLOYMENT_NAME returned ${#outputs[@]} of ${#output_names[@]} outputs"
app="${outputs[0]}"
base_url="${outputs[1]}"
redirect_uri="${outputs[2]}"
vault="${outputs[3]}"
client_id="${outputs[4]}"
client_auth="${outputs[5]}"
registration_managed="$(lower "${outputs[6]}")"
audience="${outputs[7]}"
webhook_enabled="$(lower "${outputs[8]}")"

if [[ "$client_auth" == "managed_identity" && "$audience" == "AzureADandPersonalMicrosoftAccount" ]]; then
	echo "deploy: warning: managed_identity client authentication with personal Microsoft accounts is not documented by Microsoft;" >&2
	echo "deploy: warning: if personal accounts fail to connect, set clientAuth = 'secret' in $DEPLOY_PARAMS (docs/deploy.md)" >&2
fi

# ---- 2. the package ----

step "uploading $APP_ZIP to $app"
attempt=1
until result="$(az functionapp deployment source config-zip --resource-group "$RESOURCE_GROUP" --name "$app" --src "$APP_ZIP" 2>&1)"; do
	if ! forbidden "$result"; then
		echo "$result" >&2
		die "zip deployment to $app failed"
	fi
	if ((attempt >= DEPLOY_RETRIES)); then
		echo "$result" >&2
		die "zip deployment still forbidden after $attempt attempts: the identity's role assignments may still be propagating; run make deploy again in a few minutes"
	fi
	step "upload forbidden (403) while role assignments propagate; retrying in ${DEPLOY_RETRY_DELAY}s (attempt $attempt of $DEPLOY_RETRIES)"
	sleep "$DEPLOY_RETRY_DELAY"
	attempt=$((attempt + 1))
done

# ---- 3. secrets ----

# secret_state NAME sets state to present or absent, waiting while the Key
# Vault Secrets Officer assignment made by this deployment propagates. Any
# other failure stops the script: a secret that may exist is never overwritten.
secret_state() {
	local name="$1" out try=1
	state=""
	while true; do
		if out="$(az keyvault secret show --vault-name "$vault" --name "$name" --query id --output tsv 2>&1)"; then
			state=present
			return
		fi
		# Forbidden first: Key Vault's 403 text itself says "Assignment: (not found)".
		if ! forbidden "$out" && grep -qE 'SecretNotFound|was not found in this key vault' <<<"$out"; then
			state=absent
			return
		fi
		if ! forbidden "$out" || ((try >= DEPLOY_RETRIES)); then
			echo "$out" >&2
			die "cannot read secret $name in $vault: you need Key Vault Secrets Officer on it (adminPrincipalId)"
		fi
		step "Key Vault access not effective yet; retrying in ${DEPLOY_RETRY_DELAY}s"
		sleep "$DEPLOY_RETRY_DELAY"
		try=$((try + 1))
	done
}

# put_secret NAME VALUE [EXPIRES]: the value goes through a private temporary
# file, never the command line or the terminal.
put_secret() {
	local name="$1" value="$2" expires="${3:-}" file out try=1
	file="$(umask 077 && mktemp)"
	printf '%s' "$value" >"$file"
	local args=(keyvault secret set --vault-name "$vault" --name "$name" --file "$file" --encoding utf-8 --output none)
	[[ -n "$expires" ]] && args+=(--expires "$expires")
	until out="$(az "${args[@]}" 2>&1)"; do
		if ! forbidden "$out" || ((try >= DEPLOY_RETRIES)); then
			rm -f "$file"
			echo "$out" >&2
			die "cannot set secret $name in $vault"
		fi
		sleep "$DEPLOY_RETRY_DELAY"
		try=$((try + 1))
	done
	rm -f "$file"
}

# ensure_generated NAME: 32 random bytes, base64, when the secret is absent.
ensure_generated() {
	secret_state "$1"
	if [[ "$state" == "present" ]]; then
		step "secret $1: kept (already in $vault)"
	else
		put_secret "$1" "$(openssl rand -base64 32)"
		step "secret $1: generated and stored in $vault"
	fi
}

ensure_generated token-encryption-key
ensure_generated cms-api-key
if [[ "$webhook_enabled" == "true" ]]; then
	ensure_generated cms-webhook-secret
fi

client_secret_note=""
if [[ "$client_auth" == "secret" ]]; then
	secret_state microsoft-client-secret
	if [[ "$state" == "present" ]]; then
		expires="$(az keyvault secret show --vault-name "$vault" --name microsoft-client-secret --query attributes.expires --output tsv)"
		step "secret microsoft-client-secret: kept (expires ${expires:-never: set --expires when you rotate it})"
	else
		end_date="$(date_in_days "$SECRET_VALIDITY_DAYS")"
		if password="$(az ad app credential reset --id "$client_id" --append \
			--display-name "msconnector $(date -u +%Y-%m-%d)" --end-date "$end_date" \
			--query password --output tsv 2>/dev/null)" && [[ -n "$password" ]]; then
			put_secret microsoft-client-secret "$password" "$end_date"
			unset password
			step "secret microsoft-client-secret: new client secret of $client_id stored in $vault, expires $end_date"
		else
			client_secret_note="yes"
			echo "deploy: could not add a client secret to app $client_id (you may not own it); store one yourself (below)" >&2
		fi
	fi
fi

# ---- summary ----

cat <<EOF

Deployed $app.
  Function base URL   $base_url
  Redirect URI        $redirect_uri
  Client ID           $client_id
  Client auth         $client_auth
  Key Vault           $vault

EOF
if [[ "$registration_managed" == "true" ]]; then
	echo "The app registration is managed by this deployment: the redirect URI above is registered on it (platform Web)."
else
	echo "The app registration was made by hand: make sure it lists exactly this redirect URI (platform Web):"
	echo "  $redirect_uri"
fi
if [[ "$client_auth" == "managed_identity" ]]; then
	echo "No client secret exists: the function app's managed identity is the app registration's credential."
fi
cat <<EOF

Give the CMS its API key (prints it; paste it into the CMS's configuration):
  az keyvault secret show --vault-name $vault --name cms-api-key --query value --output tsv

Secrets, for rotation later (a new version takes effect within SECRETS_CACHE_TTL, no restart):
  az keyvault secret set --vault-name $vault --name token-encryption-key --value "\$(openssl rand -base64 32)" --output none
  az keyvault secret set --vault-name $vault --name cms-api-key-previous --value "\$(az keyvault secret show --vault-name $vault --name cms-api-key --query value --output tsv)" --output none
  az keyvault secret set --vault-name $vault --name cms-api-key --value "\$(openssl rand -base64 32)" --output none
  az keyvault secret set --vault-name $vault --name cms-webhook-secret --value "\$(openssl rand -base64 32)" --output none   # only with cmsWebhookUrl
EOF
if [[ "$client_auth" == "secret" ]]; then
	cat <<EOF
  az keyvault secret set --vault-name $vault --name microsoft-client-secret --expires "\$(date -u -d '+$SECRET_VALIDITY_DAYS days' +%Y-%m-%dT%H:%M:%SZ)" \\
    --value "\$(az ad app credential reset --id $client_id --append --display-name msconnector --end-date "\$(date -u -d '+$SECRET_VALIDITY_DAYS days' +%Y-%m-%dT%H:%M:%SZ)" --query password --output tsv)" --output none
EOF
	if [[ -n "$client_secret_note" ]]; then
		echo "  (microsoft-client-secret is not set yet: run the command above, or paste a secret you created with --value)"
	fi
fi
cat <<EOF

The one manual step: admin consent, where a tenant does not let users consent
to Files.ReadWrite.All themselves (docs/deploy.md):
  this tenant:   az ad app permission admin-consent --id $client_id
  other tenants: their admin connects once through MEGDocs and ticks
                 "Consent on behalf of your organization"
EOF
