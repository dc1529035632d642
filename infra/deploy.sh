#!/usr/bin/env bash
# Deploys the MEGDocs Microsoft connector with the Azure CLI (`make deploy`):
#   1. infra/main.bicep into a resource group (created when missing), which
#      also creates the Entra app registration unless existingClientId is set;
#   2. dist/app.zip to the function app, retrying while the new role
#      assignments propagate (the first upload can get 403);
#   3. the secrets the service needs, generated here and written straight to
#      Key Vault (never printed, never in app settings); existing ones are kept.
# It prints the redirect URI, the rotation commands and the one step left by
# hand (admin consent where a tenant requires it), and ends by running
# `make verify` against the deployed app (GET /api/diagnostics).
#
#   infra/deploy.sh                 deploy (make deploy)
#   infra/deploy.sh rotate NAME     rotate one secret in KEY_VAULT_NAME (docs/deploy.md):
#                                   token-encryption-key, cms-api-key, cms-webhook-secret,
#                                   microsoft-client-secret (needs MICROSOFT_CLIENT_ID)
#
# Environment (all optional):
#   RESOURCE_GROUP        resource group (default rg-megdocs-msconnector)
#   LOCATION              region, needed only when the resource group does not exist yet
#   DEPLOY_PARAMS         parameters file (default infra/main.bicepparam)
#   APP_ZIP               package to deploy (default dist/app.zip; `make package` builds it)
#   DEPLOYMENT_NAME       ARM deployment name (default msconnector-<UTC time>)
#   ADMIN_PRINCIPAL_ID    object ID given Key Vault Secrets Officer (default: whoever deploys,
#                         resolved by Bicep's deployer(), so `az login --identity` works too);
#                         ADMIN_PRINCIPAL_TYPE User, Group or ServicePrincipal
#   ALERT_EMAIL           where the alerts go (main.bicepparam reads it)
#   KEY_VAULT_NAME_SALT   a new value gives a new vault name (after a resource group was deleted)
#   SECRET_VALIDITY_DAYS  lifetime of a client secret made here, secret mode only (default 365)
#   DEPLOY_RETRIES        zip upload attempts while forbidden (default 10)
#   DEPLOY_RETRY_DELAY    seconds between attempts (default 30)
#   VERIFY_ATTEMPTS       `make verify` runs until it passes, at most this often (default 5;
#                         0 skips it), every VERIFY_RETRY_DELAY seconds (default 30): a new
#                         app's first start and new role assignments take a few minutes
#
# make verify gets RESOURCE_GROUP, FUNCTION_APP_NAME, KEY_VAULT_NAME and
# VERIFY_BASE_URL (the function's base URL) in its environment.
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
VERIFY_ATTEMPTS="${VERIFY_ATTEMPTS:-5}"
VERIFY_RETRY_DELAY="${VERIFY_RETRY_DELAY:-30}"

die() {
	echo "deploy: $*" >&2
	exit 1
}

step() {
	echo "==> $*"
}

# forbidden reports whether an az error is an authorization failure that a
# role assignment still propagating explains. Azure words it many ways:
# "Forbidden", "(403)", AuthorizationFailed ("... does not have authorization
# to perform action ..."), Storage's AuthorizationPermissionMismatch ("This
# request is not authorized to perform this operation using this
# permission."), Key Vault's "Caller is not authorized to perform action".
forbidden() {
	grep -qiE 'forbidden|AuthorizationFailed|AuthorizationFailure|AuthorizationPermissionMismatch|not authori[sz]ed|does not have authorization|[^0-9a-z-]403[^0-9a-z-]' <<<" $1 "
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

# random_key prints 32 random bytes in base64, without a newline.
random_key() {
	openssl rand -base64 32 | tr -d '\n'
}

# rotate NAME adds a new version of one secret. Values travel only through
# shell variables and put_secret's private file: never an az argument (which
# any user of the machine can read in the process list), never the terminal.
rotate() {
	vault="${KEY_VAULT_NAME:-}"
	[[ -n "$vault" ]] || die "rotate: set KEY_VAULT_NAME to the vault (the deployment's keyVaultName output)"
	local value end_date
	case "$1" in
	token-encryption-key | cms-webhook-secret)
		put_secret "$1" "$(random_key)"
		step "$1: new version stored in $vault; the handler uses it within SECRETS_CACHE_TTL"
		;;
	cms-api-key)
		# The old key stays valid as cms-api-key-previous until the CMS has the new one.
		secret_state cms-api-key
		if [[ "$state" == "present" ]]; then
			value="$(az keyvault secret show --vault-name "$vault" --name cms-api-key --query value --output tsv)"
			put_secret cms-api-key-previous "$value"
			unset value
		fi
		put_secret cms-api-key "$(random_key)"
		step "cms-api-key: new version stored in $vault; the old key is accepted as cms-api-key-previous until you delete it"
		echo "Give the CMS the new key: az keyvault secret show --vault-name $vault --name cms-api-key --query value --output tsv"
		;;
	microsoft-client-secret)
		local client_id="${MICROSOFT_CLIENT_ID:-}"
		[[ -n "$client_id" ]] || die "rotate: set MICROSOFT_CLIENT_ID to the app registration's client ID (the deployment's microsoftClientId output)"
		end_date="$(date_in_days "$SECRET_VALIDITY_DAYS")"
		value="$(az ad app credential reset --id "$client_id" --append \
			--display-name "msconnector $(date -u +%Y-%m-%d)" --end-date "$end_date" \
			--query password --output tsv)" || die "rotate: could not add a client secret to app $client_id (you must own it or be an application administrator)"
		[[ -n "$value" ]] || die "rotate: az returned no client secret"
		put_secret microsoft-client-secret "$value" "$end_date"
		unset value
		step "microsoft-client-secret: new client secret of $client_id stored in $vault, expires $end_date; delete the old one from the app registration once the handler uses the new one"
		;;
	*)
		die "rotate: unknown secret $1 (token-encryption-key, cms-api-key, cms-webhook-secret, microsoft-client-secret)"
		;;
	esac
}

# ---- preflight ----

command -v az >/dev/null 2>&1 ||
	die "the Azure CLI (az) is not installed: see https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v openssl >/dev/null 2>&1 ||
	die "openssl is not installed: it generates the encryption and CMS keys"
account_type="$(az account show --query user.type -o tsv 2>/dev/null)" ||
	die "the Azure CLI is not logged in: run 'az login' (and 'az account set --subscription <id>'), then make deploy again"

if [[ "${1:-}" == "rotate" ]]; then
	[[ -n "${2:-}" ]] || die "usage: KEY_VAULT_NAME=<vault> infra/deploy.sh rotate <secret name>"
	rotate "$2"
	exit 0
fi
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

# The admin's object ID is left to Bicep (deployer()): looking it up here
# needs Microsoft Graph, which `az login --identity` (a managed identity) and
# many pipelines cannot read. Only its kind is decided here: `az account
# show` says "user" for a person and "servicePrincipal" for a service
# principal or a managed identity (which is a service principal).
if [[ -z "$ADMIN_PRINCIPAL_ID" ]]; then
	if [[ "$account_type" == "user" ]]; then
		admin_type=User
	else
		admin_type=ServicePrincipal
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
if ! out="$(az deployment group create \
	--resource-group "$RESOURCE_GROUP" \
	--name "$DEPLOYMENT_NAME" \
	--parameters "$DEPLOY_PARAMS" \
	--output none 2>&1)"; then
	echo "$out" >&2
	# Key Vault keeps a deleted vault's name for its retention period (90
	# days by default; purge protection forbids purging it sooner).
	if grep -qiE 'deleted state|VaultAlreadyExists|soft.?deleted' <<<"$out"; then
		die "the Key Vault name is held by a deleted vault (a resource group of this name was deleted recently): set KEY_VAULT_NAME_SALT to a new value (e.g. KEY_VAULT_NAME_SALT=2 make deploy) for a fresh vault name; docs/deploy.md explains why"
	fi
	die "deployment $DEPLOYMENT_NAME failed"
fi

output_names=(functionAppName functionBaseUrl redirectUri keyVaultName microsoftClientId clientAuthMode appRegistrationManaged signInAudience cmsWebhookEnabled dashboardUrl)
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
dashboard_url="${outputs[9]}"

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

Secrets, for rotation later (a new version takes effect within SECRETS_CACHE_TTL, no restart;
values never appear on a command line or the terminal):
  KEY_VAULT_NAME=$vault infra/deploy.sh rotate token-encryption-key
  KEY_VAULT_NAME=$vault infra/deploy.sh rotate cms-api-key
  KEY_VAULT_NAME=$vault infra/deploy.sh rotate cms-webhook-secret   # only with cmsWebhookUrl
EOF
if [[ "$client_auth" == "secret" ]]; then
	echo "  KEY_VAULT_NAME=$vault MICROSOFT_CLIENT_ID=$client_id infra/deploy.sh rotate microsoft-client-secret"
	if [[ -n "$client_secret_note" ]]; then
		echo "  (microsoft-client-secret is not set yet: run the command above as an owner of the app registration)"
	fi
fi
cat <<EOF

The one manual step: admin consent, where a tenant does not let users consent
to Files.ReadWrite.All themselves (docs/deploy.md):
  this tenant:   az ad app permission admin-consent --id $client_id
  other tenants: their admin connects once through MEGDocs and ticks
                 "Consent on behalf of your organization"
EOF

# ---- verify ----

if [[ -n "$dashboard_url" && "$dashboard_url" != "none" ]]; then
	echo
	echo "Dashboard (alerts and charts, docs/operations.md): $dashboard_url"
fi
if ((VERIFY_ATTEMPTS < 1)); then
	echo
	echo "Skipped make verify (VERIFY_ATTEMPTS=0). Run it yourself:"
	echo "  RESOURCE_GROUP=$RESOURCE_GROUP FUNCTION_APP_NAME=$app KEY_VAULT_NAME=$vault VERIFY_BASE_URL=$base_url make verify"
	exit 0
fi
step "checking the deployed app (make verify: GET $base_url/api/diagnostics)"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RESOURCE_GROUP FUNCTION_APP_NAME="$app" KEY_VAULT_NAME="$vault" VERIFY_BASE_URL="$base_url"
attempt=1
until make --no-print-directory -C "$repo_root" verify; do
	if ((attempt >= VERIFY_ATTEMPTS)); then
		die "make verify still fails after $attempt attempts: fix what the table says (docs/deploy.md, troubleshooting), then run make verify again"
	fi
	step "make verify failed; a new app can need a few minutes (first start, role assignments); retrying in ${VERIFY_RETRY_DELAY}s (attempt $attempt of $VERIFY_ATTEMPTS)"
	sleep "$VERIFY_RETRY_DELAY"
	attempt=$((attempt + 1))
done
