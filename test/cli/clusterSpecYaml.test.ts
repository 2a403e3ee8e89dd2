/** `--spec` as YAML: the same devices as the JSON spec, and a file that does not parse named with its line. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { DEFAULT_LINK_SPEC } from "../../src/cli/clusterFlags.js";
import { readClusterSpec } from "../../src/cli/clusterSpec.js";

const dir = mkdtempSync(path.join(tmpdir(), "halo-spec-yaml-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string): string => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};

test("a .yaml or .yml spec gives exactly the devices of the same spec in JSON", () => {
  const devices = [{ name: "desk" }, { name: "attic", preset: "pi4", loss: 5, jitter: 2 }, { slowdown: 2, memoryMB: 0.5, bandwidth: 50 }];
  const fromJson = readClusterSpec(write("spec.json", JSON.stringify(devices)), DEFAULT_LINK_SPEC, false);
  const yaml = "- name: desk\n- name: attic\n  preset: pi4\n  loss: 5\n  jitter: 2\n- slowdown: 2\n  memoryMB: 0.5\n  bandwidth: 50\n";
  assert.deepEqual(readClusterSpec(write("spec.yaml", yaml), DEFAULT_LINK_SPEC, false), fromJson);
  assert.deepEqual(readClusterSpec(write("spec.YML", yaml), DEFAULT_LINK_SPEC, false), fromJson);
});

test("bad YAML is a usage error with its line and column; a YAML value of the wrong shape gets the spec's own message", () => {
  const broken = write("broken.yaml", "- name: desk\n- name: [unclosed\n");
  assert.throws(() => readClusterSpec(broken, DEFAULT_LINK_SPEC, false), (error: Error & { code?: string }) => {
    assert.equal(error.code, "HALO_ERR_USAGE");
    assert.match(error.message, new RegExp(`^--spec ${broken.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: not YAML \\(line \\d+, column \\d+\\): `));
    return true;
  });
  assert.throws(() => readClusterSpec(write("map.yaml", "devices: []\n"), DEFAULT_LINK_SPEC, false), { code: "HALO_ERR_USAGE", message: /must be a JSON array with one object per device, the coordinator first/ });
  // An alias bomb stops at the alias limit instead of expanding.
  const bomb = ["- &a [x, x, x, x, x, x, x, x, x, x]", ...Array.from({ length: 12 }, (_, i) => `- &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(", ")}]`)].join("\n");
  assert.throws(() => readClusterSpec(write("bomb.yaml", bomb + "\n"), DEFAULT_LINK_SPEC, false), { code: "HALO_ERR_USAGE", message: /: not YAML.*[Aa]lias/ });
});
