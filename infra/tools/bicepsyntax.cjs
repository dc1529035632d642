#!/usr/bin/env node
// bicepsyntax: checks Bicep syntax with tree-sitter-bicep, without the Bicep
// CLI or Azure. The Go tests in infra/ drive it; `make infra-check` runs it too.
//
//   node infra/tools/bicepsyntax.cjs check <file>...  report ERROR/MISSING nodes; exit 1 if any
//   node infra/tools/bicepsyntax.cjs tree <file>      print the named syntax tree as JSON
//
// Exit codes: 0 ok, 1 syntax errors, 2 usage or unreadable file,
// 3 tree-sitter or tree-sitter-bicep missing (run `make deps`).
//
// tree-sitter-bicep 1.1.0 predates two constructs this repo uses. They are
// checked here by exact patterns instead, then blanked or rewritten with the
// same length so every reported line and column stays true:
//   - `extension <name>` statements (Bicep 0.30+, the Microsoft Graph extension):
//     validated against a strict pattern, then blanked;
//   - `param <name> = <value>` assignments in .bicepparam files: rewritten to
//     `var   <name> = <value>`, which has the same expression grammar.
'use strict';

const fs = require('fs');
const path = require('path');

const EXIT_OK = 0;
const EXIT_SYNTAX = 1;
const EXIT_USAGE = 2;
const EXIT_DEPS = 3;

function loadParser() {
  // The dev tools live in .devtools/npm (installed by `make deps`); resolve
  // them from there so no NODE_PATH is needed.
  const root = path.resolve(__dirname, '..', '..');
  const modules = process.env.BICEPSYNTAX_NODE_MODULES || path.join(root, '.devtools', 'npm', 'node_modules');
  let Parser;
  let Bicep;
  try {
    Parser = require(path.join(modules, 'tree-sitter'));
    Bicep = require(path.join(modules, 'tree-sitter-bicep'));
  } catch (err) {
    process.stderr.write(
      `bicepsyntax: cannot load tree-sitter-bicep from ${modules}: ${err.message}\n` +
        'bicepsyntax: run `make deps` (npm ci in .devtools/npm) first\n',
    );
    process.exit(EXIT_DEPS);
  }
  const parser = new Parser();
  parser.setLanguage(Bicep);
  return parser;
}

// One statement per line: `extension name`, `extension 'registry/ref'`, each
// optionally `as alias`. `with { ... }` configuration is not supported here
// and is left in place, so the grammar reports it.
const EXTENSION_RE = /^([ \t]*)extension[ \t]+([A-Za-z_][A-Za-z0-9_]*|'[^'\r\n]+')([ \t]+as[ \t]+[A-Za-z_][A-Za-z0-9_]*)?[ \t]*(\/\/[^\r\n]*)?$/;
const EXTENSION_START_RE = /^[ \t]*extension\b/;
const PARAM_ASSIGN_RE = /^([ \t]*)param([ \t]+[A-Za-z_][A-Za-z0-9_]*[ \t]*=)/;

// prepare returns the source the grammar can read plus the problems found
// while rewriting. Lengths never change, so positions stay true.
function prepare(source, file) {
  const problems = [];
  const isParams = file.endsWith('.bicepparam');
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    const cr = lines[i].length - line.length;
    if (EXTENSION_START_RE.test(line)) {
      if (EXTENSION_RE.test(line)) {
        lines[i] = ' '.repeat(line.length) + '\r'.repeat(cr);
      } else {
        problems.push({ row: i, column: line.search(/\S/), message: 'malformed extension statement' });
      }
      continue;
    }
    if (isParams) {
      lines[i] = lines[i].replace(PARAM_ASSIGN_RE, (_, indent, rest) => `${indent}var  ${rest}`);
    }
  }
  return { text: lines.join('\n'), problems };
}

function syntaxProblems(tree, text) {
  const problems = [];
  const lines = text.split('\n');
  const visit = (node) => {
    if (node.type === 'ERROR' || node.isMissing) {
      const { row, column } = node.startPosition;
      const near = (lines[row] || '').slice(column, column + 40).trim();
      const what = node.isMissing ? `missing ${node.type}` : 'syntax error';
      problems.push({ row, column, message: near ? `${what} near '${near}'` : what });
      if (node.type === 'ERROR') {
        return; // one report per broken region
      }
    }
    for (let i = 0; i < node.childCount; i++) {
      visit(node.child(i));
    }
  };
  visit(tree.rootNode);
  return problems;
}

function read(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`bicepsyntax: ${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  return '';
}

function check(parser, files) {
  let failed = 0;
  for (const file of files) {
    const { text, problems } = prepare(read(file), file);
    const tree = parser.parse(text);
    const all = problems.concat(syntaxProblems(tree, text)).sort((a, b) => a.row - b.row || a.column - b.column);
    for (const p of all) {
      process.stdout.write(`${file}:${p.row + 1}:${p.column + 1}: ${p.message}\n`);
    }
    if (all.length > 0) {
      failed++;
    }
  }
  if (failed > 0) {
    process.stdout.write(`bicepsyntax: ${failed} of ${files.length} files have syntax errors\n`);
    return EXIT_SYNTAX;
  }
  process.stdout.write(`bicepsyntax: ${files.length} files parse cleanly\n`);
  return EXIT_OK;
}

// toJSON keeps named nodes only: type, field name, first line (1-based), text.
function toJSON(node, field) {
  const out = { type: node.type, line: node.startPosition.row + 1, text: node.text };
  if (field) {
    out.field = field;
  }
  const children = [];
  for (let i = 0; i < node.namedChildCount; i++) {
    const child = node.namedChild(i);
    children.push(toJSON(child, fieldOf(node, child)));
  }
  if (children.length > 0) {
    out.children = children;
  }
  return out;
}

function fieldOf(parent, child) {
  const cursor = parent.walk();
  try {
    if (!cursor.gotoFirstChild()) {
      return undefined;
    }
    do {
      if (cursor.startIndex === child.startIndex && cursor.endIndex === child.endIndex && cursor.nodeType === child.type) {
        return cursor.currentFieldName || undefined;
      }
    } while (cursor.gotoNextSibling());
  } finally {
    if (typeof cursor.delete === 'function') {
      cursor.delete();
    }
  }
  return undefined;
}

function tree(parser, file) {
  const { text, problems } = prepare(read(file), file);
  const parsed = parser.parse(text);
  const all = problems.concat(syntaxProblems(parsed, text));
  if (all.length > 0) {
    for (const p of all) {
      process.stderr.write(`${file}:${p.row + 1}:${p.column + 1}: ${p.message}\n`);
    }
    return EXIT_SYNTAX;
  }
  process.stdout.write(JSON.stringify(toJSON(parsed.rootNode)));
  process.stdout.write('\n');
  return EXIT_OK;
}

function main(argv) {
  const [command, ...files] = argv;
  if ((command !== 'check' && command !== 'tree') || files.length === 0 || (command === 'tree' && files.length !== 1)) {
    process.stderr.write('usage: bicepsyntax.cjs check <file>... | tree <file>\n');
    return EXIT_USAGE;
  }
  const parser = loadParser();
  return command === 'check' ? check(parser, files) : tree(parser, files[0]);
}

process.exitCode = main(process.argv.slice(2));
