/**
 * The plan at join: once every worker has joined and sent its profile, the planner may move
 * groups before the first token (the workers load them then, attention included: no KV yet).
 */
import { HaloError, type Clock } from "../base/index.js";
import type { MeasuredProfile, WireFormat } from "../net/index.js";
import { validatePlacement, type GroupLayout, type Placement } from "../partition/index.js";
import type { GroupPredictor } from "../predictor/index.js";
import { clusterProfiles } from "./clusterProfiles.js";
import type { ClusterOptions, ClusterSchedule } from "./clusterOptions.js";
import { groupsMoved } from "./liveReplan.js";
import { planMessage, sendPlan, shardSource, workerSkipBelow, type WorkerLink } from "./workerLink.js";

/** The placement change made at join: how many groups moved and how long the workers took to load them. */
export interface Replanned {
  readonly groupsMoved: number;
  readonly migrationMs: number;
}

export interface PlannedCluster {
  placement: Placement;
  schedule: ClusterSchedule | undefined;
  replanned: Replanned | undefined;
}

/** Asks options.plan for a placement now that profiles are in, and sends the workers their new groups if it differs. */
export async function replanAtJoin(
  options: ClusterOptions,
  state: { placement: Placement; layout: GroupLayout; links: WorkerLink[]; localProfile: MeasuredProfile | undefined; epoch: number; wire: WireFormat; copies: number; clock: Clock },
): Promise<PlannedCluster> {
  const { placement, layout, links, clock } = state;
  const unchanged: PlannedCluster = { placement, schedule: options.schedule, replanned: undefined };
  const chosen = options.plan?.(clusterProfiles(state.localProfile, links, options.devices));
  if (chosen === undefined) return unchanged;
  validatePlacement(chosen.placement, layout, options.model.config.nLayers);
  if (chosen.placement.nDevices !== links.length + 1) throw new HaloError("HALO_ERR_USAGE", `the planned placement is for ${chosen.placement.nDevices} devices; the cluster has ${links.length + 1}`);
  const moved = groupsMoved(placement, chosen.placement);
  if (moved === 0) return { ...unchanged, schedule: chosen.schedule ?? options.schedule };
  const started = clock.now();
  await Promise.all(links.map(async (link) => {
    const message = planMessage(chosen.placement, layout, link.index, state.epoch, state.wire, 0, state.copies, workerSkipBelow(options));
    const answer = await sendPlan(link.connection, message, shardSource(options, layout, chosen.placement, link.index, clock));
    link.profile = answer.profile ?? link.profile;
  }));
  return { placement: chosen.placement, schedule: chosen.schedule, replanned: { groupsMoved: moved, migrationMs: clock.now() - started } };
}

/** A predictor fitted for another block size or depth cannot rank this cluster's groups. */
export function checkPredictorFits(predictor: GroupPredictor, layout: GroupLayout, dim: number, nLayers: number): void {
  const fits = predictor.inputDim === dim && predictor.nLayers === nLayers && predictor.ffnBlockSize === layout.ffnBlockSize &&
    predictor.maps.attention.every((m) => m.nOutputs === layout.nAttentionGroups) && predictor.maps.ffn.every((m) => m.nOutputs === layout.nFfnGroups);
  if (!fits) throw new HaloError("HALO_ERR_USAGE", `the predictor was fitted for FFN blocks of ${predictor.ffnBlockSize} neurons and ${predictor.nLayers} layers; this cluster uses blocks of ${layout.ffnBlockSize} and ${nLayers} layers`);
}
