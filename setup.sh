#!/usr/bin/env bash
# hsbi environment set-up. Source it from anywhere:  source setup.sh
#
# First call: creates .venv, installs torch (pinned, CPU wheel) and then the project with its test
# extras, and pyhs3 (a test dependency) apart in .venv/pyhs3. Later calls only export the environment
# and refresh the law task index.
#
# Variables exported:
#   HSBI_BASE         the checkout (folder of this file)
#   HSBI_STORE        content-addressed store root; default $HSBI_BASE/store (git-ignored)
#   LAW_HOME          law's home (task index, job files); default $HSBI_BASE/.law
#   LAW_CONFIG_FILE   $HSBI_BASE/law.cfg
#   PYTHONPATH        $HSBI_BASE prepended (so `workflows` is importable by law)
# Variables read:
#   HSBI_TORCH_SPEC   pip requirement for torch; default torch==2.13.0 (CPU wheel on disk here)
#   HSBI_PYTHON       interpreter used to create .venv; default python3
#   HSBI_REINSTALL=1  force the install step again

action() {
    local shell_is_zsh="$( [ -z "${ZSH_VERSION:-}" ] && echo "false" || echo "true" )"
    local this_file="$( ${shell_is_zsh} && echo "${(%):-%x}" || echo "${BASH_SOURCE[0]}" )"
    local this_dir="$( cd "$( dirname "${this_file}" )" && pwd )"

    export HSBI_BASE="${this_dir}"
    export HSBI_STORE="${HSBI_STORE:-${HSBI_BASE}/store}"
    export LAW_HOME="${LAW_HOME:-${HSBI_BASE}/.law}"
    export LAW_CONFIG_FILE="${HSBI_BASE}/law.cfg"
    case ":${PYTHONPATH:-}:" in *":${HSBI_BASE}:"*) ;; *) export PYTHONPATH="${HSBI_BASE}${PYTHONPATH:+:${PYTHONPATH}}" ;; esac
    export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"

    local venv="${HSBI_BASE}/.venv"
    local stamp="${venv}/.hsbi-installed"
    # the stamp holds the hash of pyproject.toml and of the pyhs3 requirements: changed dependencies
    # are installed on the next call
    local wanted
    wanted="$(cat "${HSBI_BASE}/pyproject.toml" "${HSBI_BASE}/tests/pyhs3-requirements.txt" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "${stamp}" 2>/dev/null)" != "${wanted}" ] || [ "${HSBI_REINSTALL:-0}" = "1" ]; then
        echo "hsbi setup: installing into ${venv} (first call, or pyproject.toml or the pyhs3 requirements changed; log: ${venv}/install.log)"
        [ -d "${venv}" ] || "${HSBI_PYTHON:-python3}" -m venv "${venv}" || return 1
        local log="${venv}/install.log"
        local pip="${venv}/bin/python -m pip install --disable-pip-version-check"
        # torch first, pinned: anything later that depends on torch then finds it satisfied.
        if ! { ${pip} --upgrade pip setuptools wheel \
                && ${pip} "${HSBI_TORCH_SPEC:-torch==2.13.0}" \
                && ${pip} -e "${HSBI_BASE}[test]" \
                && ${pip} --upgrade --no-deps --target "${venv}/pyhs3" -r "${HSBI_BASE}/tests/pyhs3-requirements.txt"; \
             } >"${log}" 2>&1; then
            tail -n 20 "${log}"
            echo "hsbi setup: installation failed; full log in ${log}" >&2
            return 1
        fi
        echo "${wanted}" > "${stamp}"
    fi
    # shellcheck disable=SC1091
    source "${venv}/bin/activate" || return 1
    mkdir -p "${LAW_HOME}"
    # bytecode of the project's own modules: where PYTHONDONTWRITEBYTECODE is set, Python would
    # otherwise compile every hsbi and workflows module on each `law` command (~0.3 s of a warm run);
    # compileall only rewrites the files that changed
    python -m compileall -q -j 0 "${HSBI_BASE}/hsbi" "${HSBI_BASE}/workflows" >/dev/null || return 1
    law index -q || return 1
}
action "$@"
