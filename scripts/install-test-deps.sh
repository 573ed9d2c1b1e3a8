#!/usr/bin/env bash
# Install what the integration tests need: Dovecot 2.3 (IMAP, POP3, submission,
# LMTP), curl, msmtp and the mail programs of the recipes (mbsync with the
# XOAUTH2 SASL plugin, offlineimap3, neomutt, git send-email) and redis-server
# (the shared token store's tests) from Debian's packages, and the system user
# that owns the test Maildirs. The system Dovecot and Redis are never started. Idempotent; quiet when everything is present already.
set -euo pipefail

PACKAGES=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond dovecot-lmtpd curl msmtp
    isync libsasl2-modules-kdexoauth2 offlineimap3 neomutt git-email libmailtools-perl
    redis-server)
# Must match MAIL_USER in tests/integration/dovecot.py.
MAIL_USER=gx2-testmail

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- "$0" "$@"
    fi
    echo "install-test-deps: run as root (or install sudo)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    echo "install-test-deps: installing ${missing[*]}"
    # A policy-rc.d that exits 101 tells invoke-rc.d not to start any service
    # (Debian policy 9.3.3), so the system Dovecot does not take ports 143/993/...
    policy=/usr/sbin/policy-rc.d
    backup=""
    if [[ -e $policy ]]; then
        backup=$(mktemp)
        cp -p "$policy" "$backup"
    fi
    restore_policy() {
        if [[ -n $backup ]]; then
            mv -f "$backup" "$policy"
        else
            rm -f "$policy"
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    restore_policy
    trap - EXIT
    # Stop and disable anything that started anyway (systemd machines ignore
    # policy-rc.d for socket activation in some setups).
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now dovecot.service dovecot.socket redis-server.service \
            >/dev/null 2>&1 || true
    fi
fi

# The system instance, if one runs anyway, is stopped by its own pid file.
sys_pid=/run/dovecot/master.pid
if [[ -s $sys_pid ]] && kill -0 "$(cat "$sys_pid")" 2>/dev/null; then
    echo "install-test-deps: stopping the system Dovecot (pid $(cat "$sys_pid"))"
    doveadm stop >/dev/null 2>&1 || kill "$(cat "$sys_pid")"
fi

if ! getent passwd "$MAIL_USER" >/dev/null; then
    echo "install-test-deps: creating system user $MAIL_USER"
    useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --user-group "$MAIL_USER"
fi
