/** The one entry point behind `--placement uniform|proportional|halo`. */
import { baselinePlacement } from "./baselines.js";
import { CostModel } from "./costModel.js";
import { evaluateWithModel, type Schedule } from "./evaluatePlacement.js";
import { scheduleHalo } from "./scheduleHalo.js";
import { validateScheduleInput, type ScheduleInput, type ScheduleOptions } from "./scheduleInput.js";

export const PLACEMENT_CHOICES = ["uniform", "proportional", "halo"] as const;
export type PlacementChoice = (typeof PLACEMENT_CHOICES)[number];

/**
 * The placement a choice gives, evaluated under the scheduler's model (critical devices, deadlines, objective) whichever it is.
 * Pins (ScheduleInput.pinned) hold for every choice: the baselines' split with each pinned group overwritten onto its device,
 * memory unchecked as for any baseline; halo plans around them and throws when they alone exceed a budget.
 */
export function scheduleForChoice(choice: PlacementChoice, input: ScheduleInput, options: ScheduleOptions = {}): Schedule {
  validateScheduleInput(input, options);
  switch (choice) {
    case "uniform":
    case "proportional": {
      const model = new CostModel(input, options);
      return evaluateWithModel(model, baselinePlacement(model, choice)).schedule;
    }
    case "halo":
      return scheduleHalo(input, options);
    default:
      return choice satisfies never;
  }
}
