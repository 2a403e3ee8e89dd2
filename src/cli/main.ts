#!/usr/bin/env node
/**
 * The `halo` command. The only place that reads argv and decides exit codes: a HaloError
 * becomes one line on stderr (exit 2 for usage, 1 otherwise); anything else is a bug and keeps
 * its stack trace.
 */
import { HaloError } from "../base/index.js";
import { clusterCommand, CLUSTER_HELP } from "./cluster.js";
import { convertCommand, CONVERT_HELP } from "./convert.js";
import { doctorCommand, DOCTOR_HELP } from "./doctor.js";
import { inspectCommand, INSPECT_HELP } from "./inspect.js";
import type { CommandIo } from "./io.js";
import { perplexityCommand, PERPLEXITY_HELP } from "./perplexity.js";
import { profileCommand, PROFILE_HELP } from "./profile.js";
import { calibrateCommand, CALIBRATE_HELP } from "./calibrate.js";
import { chatCommand, CHAT_HELP } from "./chat.js";
import { evalCommand, EVAL_HELP } from "./evalCommand.js";
import { runCommand, RUN_HELP } from "./run.js";
import { serveCommand, SERVE_HELP } from "./serve.js";
import { synthCommand, SYNTH_HELP } from "./synth.js";
import { testbedCommand, TESTBED_HELP } from "./testbed.js";
import { workerCommand, WORKER_HELP } from "./worker.js";

type Command = (argv: readonly string[], io: CommandIo) => Promise<number>;

const COMMANDS: Record<string, { run: Command; help: string; summary: string }> = {
  run: { run: runCommand, help: RUN_HELP, summary: "generate text from a prompt" },
  serve: { run: serveCommand, help: SERVE_HELP, summary: "serve an OpenAI-compatible HTTP API (one node or a cluster)" },
  chat: { run: chatCommand, help: CHAT_HELP, summary: "chat with the model in the terminal" },
  inspect: { run: inspectCommand, help: INSPECT_HELP, summary: "show a GGUF file's metadata and tensors" },
  perplexity: { run: perplexityCommand, help: PERPLEXITY_HELP, summary: "score a text file (mean NLL, perplexity)" },
  calibrate: { run: calibrateCommand, help: CALIBRATE_HELP, summary: "fit the group-importance predictor on a corpus" },
  eval: { run: evalCommand, help: EVAL_HELP, summary: "what dropping groups costs, by predictor, oracle, static and random choice" },
  convert: { run: convertCommand, help: CONVERT_HELP, summary: "convert a llama2.c checkpoint to GGUF" },
  synth: { run: synthCommand, help: SYNTH_HELP, summary: "write a synthetic model with real shapes" },
  worker: { run: workerCommand, help: WORKER_HELP, summary: "serve a share of the model to a coordinator" },
  cluster: { run: clusterCommand, help: CLUSTER_HELP, summary: "run a local cluster of N processes with emulated links" },
  testbed: { run: (argv, io) => testbedCommand(argv, io), help: TESTBED_HELP, summary: "build, inspect or remove a namespace testbed: one network namespace per device, loss on the wire (root)" },
  profile: { run: profileCommand, help: PROFILE_HELP, summary: "measure this device for the scheduler: compute per group, memory, disk" },
  doctor: { run: doctorCommand, help: DOCTOR_HELP, summary: "show the runtime and the native kernel build" },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: halo <command> [flags]\n\ncommands:\n${lines.join("\n")}\n\nRun 'halo <command> --help' for a command's flags.\n`;
}

export async function main(argv: readonly string[], io: CommandIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.stdout(usage());
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (command === undefined || !Object.hasOwn(COMMANDS, name)) {
    io.stderr(`halo: error: unknown command '${name}'\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof HaloError) {
      io.stderr(`halo ${name}: error: ${error.message} [${error.code}]\n`);
      return error.code === "HALO_ERR_USAGE" ? 2 : 1;
    }
    throw error;
  }
}

const io: CommandIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};
// A closed pipe (`halo run | head`) is not an error worth a trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});
process.exitCode = await main(process.argv.slice(2), io);
