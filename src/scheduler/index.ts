export { PERFECT_LINK, type ComputeSample, type DeviceProfile, type LinkSample } from "./deviceProfile.js";
