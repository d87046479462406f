// Proof that the type check can fail: each line marked @ts-expect-error must
// be a type error. If a check stopped catching its case, tsc would report the
// directive as unused and fail, so a green run shows these are still caught.
import dashboardJson from '../../dashboards/downbeat.json';
import type { Dashboard, PanelTypes, StrictDashboard, Widen } from './schema-types';

// The JSON-import check (dashboard.ts) on mutated copies of the real board:
const refreshAsNumber = { ...dashboardJson, refresh: 5 };
// @ts-expect-error `refresh` must be a string such as "5s"
export const wrongTypedField: Widen<Dashboard> = refreshAsNumber;

const panelWithoutType = { ...dashboardJson, panels: [{ id: 1, title: 'no type', gridPos: { h: 8, w: 12, x: 0, y: 0 } }] };
// @ts-expect-error every panel needs `type`
export const missingRequiredField: Widen<Dashboard> = panelWithoutType;

// The strict check (.generated/strict.ts) on small literals:
export const misspeltKey = {
  schemaVersion: 39,
  // @ts-expect-error unknown key: `refresh` is misspelt
  refesh: '5s',
  panels: [],
} satisfies StrictDashboard;

export const unknownEnumValue = {
  schemaVersion: 39,
  // @ts-expect-error graphTooltip is 0, 1 or 2
  graphTooltip: '1',
  panels: [],
} satisfies StrictDashboard;

export const hardCodedDatasource = {
  type: 'row',
  id: 1,
  collapsed: false,
  panels: [],
  // @ts-expect-error only the ${datasource} variable may be referenced
  datasource: { type: 'prometheus', uid: 'P1809F7CD0C75ACF3' },
} satisfies PanelTypes['row'];
