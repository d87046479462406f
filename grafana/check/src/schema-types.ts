// Type helpers that map Grafana's own dashboard and panel types (@grafana/schema)
// onto what a dashboard JSON file can hold. Used by dashboard.ts (the JSON
// import) and by the strict check that gen-strict.mjs writes.
import type { Dashboard, FieldConfig, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Geomap from '@grafana/schema/dist/esm/raw/composable/geomap/panelcfg/x/GeomapPanelCfg_types.gen';
import type * as Heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as Histogram from '@grafana/schema/dist/esm/raw/composable/histogram/panelcfg/x/HistogramPanelCfg_types.gen';
import type * as PieChart from '@grafana/schema/dist/esm/raw/composable/piechart/panelcfg/x/PieChartPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as Text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/**
 * What a JSON *import* can be checked against. TypeScript types the strings of
 * an imported .json file as plain `string`, which a string enum of the schema
 * (ThresholdsMode, FieldColorModeId, ...) never accepts, so string-typed
 * positions are widened to `string`. Everything else (required fields, numbers
 * vs strings, arrays vs objects, nesting) is checked as the schema says.
 */
export type Widen<T> = T extends string
  ? string
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Widen<U>>
      : T extends object
        ? { [K in keyof T]: Widen<T[K]> }
        : T;

/**
 * What a dashboard written as an object *literal* is checked against (the
 * strict check): string enums become the union of their values, so
 * `"mode": "absolut"` fails, and object literals get TypeScript's excess
 * property check, so a misspelt key (`"refesh"`) fails too.
 */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

export type DeepPartial<T> = T extends ReadonlyArray<infer U>
  ? Array<DeepPartial<U>>
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** The only data source reference this board may use. */
export type DatasourceVariable = { type: 'prometheus'; uid: '${datasource}' };

/**
 * A Prometheus query as Grafana saves it. @grafana/schema types targets as
 * `Record<string, unknown>` (each data source plugin owns its query model), so
 * this is the shape the board commits to: the datasource variable and an
 * `expr` on every target.
 */
export interface PrometheusTarget {
  datasource: DatasourceVariable;
  refId: string;
  expr: string;
  editorMode?: 'code' | 'builder';
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  exemplar?: boolean;
  hide?: boolean;
}

type DashboardFieldConfig<TCustom> = Json<Omit<FieldConfig, 'custom'>> & { custom?: Json<DeepPartial<TCustom>> };

/** A panel of a given plugin: Grafana's Panel with that plugin's options and field config. */
export type PanelOf<TType extends string, TOptions, TCustom = Record<string, never>> = Json<
  Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource'>
> & {
  type: TType;
  datasource: DatasourceVariable;
  targets: PrometheusTarget[];
  options: Json<TOptions>;
  fieldConfig: Json<Omit<FieldConfigSource, 'defaults'>> & { defaults: DashboardFieldConfig<TCustom> };
};

/** Panel plugins the board may use, each with its own option types. */
export interface PanelTypes {
  bargauge: PanelOf<'bargauge', BarGauge.Options>;
  geomap: PanelOf<'geomap', Geomap.Options>;
  heatmap: PanelOf<'heatmap', Heatmap.Options, Heatmap.FieldConfig>;
  histogram: PanelOf<'histogram', Histogram.Options, Histogram.FieldConfig>;
  piechart: PanelOf<'piechart', PieChart.Options, PieChart.FieldConfig>;
  stat: PanelOf<'stat', Stat.Options>;
  table: PanelOf<'table', Table.Options, Table.FieldConfig>;
  text: Json<Omit<Panel, 'type' | 'options'>> & { type: 'text'; options: Json<Text.Options> };
  timeseries: PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;
  row: Json<Omit<RowPanel, 'panels' | 'datasource'>> & { datasource?: DatasourceVariable; panels: [] };
}

/**
 * The dashboard itself, panels aside (they are checked one by one against
 * PanelTypes). `style` is not in the current schema (Grafana takes the theme
 * from user preferences) but older Grafana versions read it, so it is allowed.
 */
export type StrictDashboard = Json<Omit<Dashboard, 'panels'>> & {
  style?: 'dark' | 'light';
  panels: Array<PanelTypes[keyof PanelTypes]>;
};

export type { Dashboard };
