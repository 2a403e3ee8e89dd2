/** Perplexity of stories260K at window 512 by the golden protocol (one file per window so the runner parallelises them). */
import { test } from "node:test";
import { checkGoldenPerplexity } from "../helpers/golden.js";

test("perplexity at window 512 matches the reference within 0.005", () => checkGoldenPerplexity(512));
