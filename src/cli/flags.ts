/**
 * Flag parsing for every command: node's parseArgs in strict mode plus typed validators, so a
 * bad flag becomes one UsageError line naming the flag and what it accepts.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../base/index.js";

export type FlagSpec = NonNullable<ParseArgsConfig["options"]>;

export interface ParsedFlags {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** A value that parseArgs would take for a flag ("-1", "-0.5"): joined as `--name=value` so the validator reports the range. */
const NEGATIVE_NUMBER = /^-(\d|\.\d|Infinity$)/;

function joinNegativeValues(argv: readonly string[], options: FlagSpec): string[] {
  const longName = (arg: string): string | undefined => {
    if (arg.startsWith("--")) return Object.hasOwn(options, arg.slice(2)) ? arg.slice(2) : undefined;
    if (/^-[^-]$/.test(arg)) return Object.entries(options).find(([, o]) => o.short === arg.slice(1))?.[0];
    return undefined;
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") return [...out, ...argv.slice(i)];
    const name = longName(arg);
    const next = argv[i + 1];
    if (name !== undefined && options[name]?.type === "string" && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

export function parseFlags(argv: readonly string[], options: FlagSpec, allowPositionals = false): ParsedFlags {
  try {
    const { values, positionals } = parseArgs({ args: joinNegativeValues(argv, options), options: { ...options, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals });
    return { values: values as ParsedFlags["values"], positionals };
  } catch (error) {
    const lines = error instanceof Error ? error.message.split("\n") : [String(error)];
    // parseArgs puts the fix for an ambiguous value ("use '--prompt=-XYZ'") on the last line.
    const message = lines.length > 1 && / is ambiguous\.$/.test(lines[0]!) ? `${lines[0]} ${lines[lines.length - 1]}` : lines[0]!;
    throw new UsageError(message.replace(/^Unknown option/, "unknown flag").replace(/\. To specify a positional argument.*$/, ""));
  }
}

export function stringFlag(flags: ParsedFlags, name: string): string | undefined {
  const value = flags.values[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new UsageError(`--${name} needs a value`);
  return value;
}

export function requiredStringFlag(flags: ParsedFlags, name: string): string {
  const value = stringFlag(flags, name);
  if (value === undefined || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

export function booleanFlag(flags: ParsedFlags, name: string): boolean {
  return flags.values[name] === true;
}

/** An integer flag within [min, max]. */
export function integerFlag(flags: ParsedFlags, name: string, min: number, max: number): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${raw}'`);
  }
  return value;
}

/** A finite number flag within [min, max]. */
export function numberFlag(flags: ParsedFlags, name: string, min: number, max: number): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got '${raw}'`);
  }
  return value;
}

export function choiceFlag<T extends string>(flags: ParsedFlags, name: string, choices: readonly T[]): T | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got '${raw}'`);
  return raw as T;
}
