#!/bin/sh
# Vault password client for the example inventories (ansible-playbook
# --vault-password-file inventories/example/vault-password.sh). Ansible runs this file and
# reads the password from its standard output, so the password never sits in the repo:
#   1. SDAPI_VAULT_PASSWORD, for CI jobs that get it from their secret store;
#   2. else ${XDG_CONFIG_HOME:-~/.config}/sdapi/vault-password, a file only its owner may
#      read (mode 0600), for an operator's workstation.
set -eu
if [ -n "${SDAPI_VAULT_PASSWORD:-}" ]; then
  printf '%s\n' "$SDAPI_VAULT_PASSWORD"
  exit 0
fi
file="${XDG_CONFIG_HOME:-$HOME/.config}/sdapi/vault-password"
if [ ! -r "$file" ]; then
  echo "vault-password.sh: set SDAPI_VAULT_PASSWORD or create $file (mode 0600)" >&2
  exit 1
fi
case "$(stat -c %a "$file")" in
  600 | 400) ;;
  *) echo "vault-password.sh: $file must be mode 0600: others can read it" >&2; exit 1 ;;
esac
head -n 1 "$file"
