/** Perplexity of stories260K at window 256 by the golden protocol (one file per window so the runner parallelises them). */
import { test } from "node:test";
import { checkGoldenPerplexity } from "../helpers/golden.js";

test("perplexity at window 256 matches the reference within 0.005", () => checkGoldenPerplexity(256));
