import { appsFeature } from './apps/apps-feature.js';
import type { FeatureDefinition } from './feature.js';
import { pushFeature } from './push/push-feature.js';
import { extensionsFeature } from './extensions/extensions-feature.js';

/** Every feature this build knows, in setup order; each is switched on or off by the configuration. */
export const BUILT_IN_FEATURES: readonly FeatureDefinition[] = [appsFeature, pushFeature, extensionsFeature];
