/**
 * 统计: one GET /stats per view (the chosen grouping; the overall figures come with it). Every
 * chart has its table beside it, built from the same cell texts as the CSV export, so what is
 * drawn, read out and exported is the same data. Two figures the API leaves to its readers are
 * derived here from its counts, rounded half up to 4 places as the API rounds: 响应及时率 and
 * 满意率. A figure or a row opens the orders behind it (GET /work-orders, same cohort).
 */
import { api } from "../js/api.js";
import { channelLabel, kindLabel, labels, statusLabel, timeZone } from "../js/context.js";
import { announce, fill, h } from "../js/dom.js";
import { formatTime } from "../js/format.js";

// Chart.js from node_modules (assets.py VENDOR); without it the tables still say everything.
const chartLib = import("../vendor/chart.umd.js")
  .then(() => {
    const Chart = globalThis.Chart ?? null;
    if (Chart) {
      // The console's large type and dark text, in the charts too.
      Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      Chart.defaults.font.size = 15;
      Chart.defaults.color = "#1b1b1b";
    }
    return Chart;
  })
  .catch(() => null);

const DASH = "—";
const OPEN = ["new", "accepted", "in_progress", "on_hold"];
const DRILL_PAGE = 100;
const CLIENT_FILTER_LIMIT = 500;
const GROUP_NAMES = {
  community: "社区",
  kind: "类型",
  channel: "渠道",
  day: "日期",
  week: "周",
  month: "月份",
};
const TIME_GROUPS = new Set(["day", "week", "month"]);
const COLORS = ["#0b4f8a", "#c2571a", "#1d6b2f", "#7b3fa0", "#8a6d00"];
const SCORE_COLORS = ["#b3001b", "#d9661f", "#7a7a7a", "#5a9e3a", "#1d6b2f"];

const form = document.getElementById("s-filters");
const errorBox = document.getElementById("s-error");
const summary = document.getElementById("s-summary");
const overviewBox = document.getElementById("s-overview");
const sectionsBox = document.getElementById("s-sections");
const drill = document.getElementById("s-drill");
const drillBody = document.querySelector("#s-drill-table tbody");
const drillSummary = document.getElementById("s-drill-summary");
const drillMore = document.getElementById("s-drill-more");
const announcer = document.getElementById("s-announcer");
const field = (name) => document.getElementById(`s-${name}`);

let report = null; // the last GET /stats answer
let applied = null; // the filters it was asked with
const charts = [];

// --- numbers as the API defines them ---------------------------------------------------------

/** a / b rounded half up to 4 places (exact integer arithmetic), null when b is 0. */
function ratio(a, b) {
  if (!b) return null;
  return Math.floor((a * 20000 + b) / (2 * b)) / 10000;
}

/** 0.375 -> "37.50%": the API's 4 places, nothing lost. */
function percent(value) {
  if (value == null) return DASH;
  const q = Math.round(value * 10000);
  return `${Math.floor(q / 100)}.${String(q % 100).padStart(2, "0")}%`;
}

/** Seconds to the second: 1天2小时3分4秒. */
function seconds(value) {
  if (value == null) return DASH;
  let n = Math.round(value);
  const parts = [];
  for (const [size, unit] of [
    [86400, "天"],
    [3600, "小时"],
    [60, "分"],
  ]) {
    if (n >= size) parts.push(`${Math.floor(n / size)}${unit}`);
    n %= size;
  }
  if (n || !parts.length) parts.push(`${n}秒`);
  return parts.join("");
}

const count = (n) => String(n);
const average = (v) => (v == null ? DASH : v.toFixed(2));

function derived(f) {
  const d = f.satisfaction.distribution;
  const satisfied = (d["4"] ?? 0) + (d["5"] ?? 0);
  return {
    onTime: ratio(f.created - f.sla.response_breaches, f.created),
    satisfied,
    satisfactionRate: ratio(satisfied, f.satisfaction.rated),
  };
}

// --- dates in the service's time zone ----------------------------------------------------------

const dayFormat = new Intl.DateTimeFormat("en-CA", {
  timeZone,
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
});
const today = () => dayFormat.format(new Date());

function addDays(day, n) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

function monthStart(day, shift = 0) {
  const [y, m] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1 + shift, 1)).toISOString().slice(0, 10);
}

const RANGES = {
  "this-month": () => [monthStart(today()), monthStart(today(), 1)],
  "last-month": () => [monthStart(today(), -1), monthStart(today())],
  "last-7": () => [addDays(today(), -6), addDays(today(), 1)],
  "last-30": () => [addDays(today(), -29), addDays(today(), 1)],
  "this-year": () => [`${today().slice(0, 4)}-01-01`, addDays(today(), 1)],
};

const DATE = /^\d{4}-\d{2}-\d{2}$/;

function chineseDate(day) {
  const [y, m, d] = day.split("-").map(Number);
  return `${y}年${m}月${d}日`;
}

// --- filters ---------------------------------------------------------------------------------

function buildFilters() {
  for (const [value, label] of Object.entries(labels.kind)) {
    field("kind").append(h("option", { value }, label));
  }
  for (const [value, label] of Object.entries(labels.channel)) {
    field("channel").append(h("option", { value }, label));
  }
  for (const button of form.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      const [from, to] = RANGES[button.dataset.range]();
      field("from").value = from;
      field("until").value = addDays(to, -1);
      form.requestSubmit();
    });
  }
}

/** The API's parameters: `to` is exclusive, the form shows the last day included. */
function readFilters() {
  const from = field("from").value;
  const until = field("until").value;
  return {
    from,
    to: DATE.test(until) ? addDays(until, 1) : "",
    community: field("community").value.trim(),
    kind: field("kind").value,
    channel: field("channel").value,
    group_by: field("group").value,
  };
}

function writeFilters(f) {
  field("from").value = f.from;
  field("until").value = DATE.test(f.to) ? addDays(f.to, -1) : "";
  field("community").value = f.community;
  field("kind").value = f.kind;
  field("channel").value = f.channel;
  field("group").value = f.group_by;
}

function filtersFromUrl() {
  const q = new URLSearchParams(location.search);
  const [from, to] = RANGES["this-month"]();
  const pick = (name, allowed) => (allowed.includes(q.get(name)) ? q.get(name) : "");
  return {
    from: DATE.test(q.get("from") ?? "") ? q.get("from") : from,
    to: DATE.test(q.get("to") ?? "") ? q.get("to") : to,
    community: (q.get("community") ?? "").slice(0, 64),
    kind: pick("kind", Object.keys(labels.kind)),
    channel: pick("channel", Object.keys(labels.channel)),
    group_by: pick("group_by", Object.keys(GROUP_NAMES)) || "community",
  };
}

function queryOf(f) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(f)) if (value) q.set(key, value);
  return q.toString();
}

function validate(f) {
  if (!DATE.test(f.from)) return { message: "请填写开始日期。", field: "from" };
  if (!DATE.test(f.to)) return { message: "请填写结束日期。", field: "until" };
  if (f.from >= f.to) return { message: "结束日期不能早于开始日期。", field: "until" };
  return null;
}

// --- tables and charts -----------------------------------------------------------------------

function groupLabel(groupBy, key) {
  if (groupBy === "community") return key ?? "未关联居民";
  if (groupBy === "kind") return kindLabel(key);
  if (groupBy === "channel") return channelLabel(key);
  if (groupBy === "week") return `${key} 起`;
  return key;
}

/** Rows: the groups, then 合计 (the overall figures). */
function rowsOf(stats) {
  const rows = stats.groups.map((g) => ({
    label: groupLabel(stats.group_by, g.key),
    key: g.key,
    group: true,
    start: g.start ?? stats.from,
    end: g.end ?? stats.to,
    f: g,
  }));
  rows.push({
    label: "合计",
    key: null,
    group: false,
    start: stats.from,
    end: stats.to,
    f: stats.overall,
  });
  return rows;
}

/**
 * Each table: columns of [header, cell text, drill-down kind or null]; the chart draws some of
 * them. Formulas are the API's definitions (GET /stats) in Chinese.
 */
const TABLES = [
  {
    id: "rates",
    title: "办结率与响应及时率",
    formulas: [
      [
        "办结率",
        "办结 ÷（新建 − 取消）。取消的工单不计入分母；区间结束时仍未办结的算未办结。四舍五入到万分位，分母为 0 时显示“—”。",
      ],
      [
        "办结",
        "区间结束时状态为已办结或已关闭的工单数；区间结束后才办结的不算，重新打开的按区间结束时的状态算。",
      ],
      [
        "响应及时率",
        "（新建 − 首次响应超时）÷ 新建。首次响应超时指首次响应时限在区间结束前已被判定超时的工单（含之后取消或办结的）；区间结束时还没超时的，包括仍在等待响应但未到时限的，算及时。由本页按接口的数字计算，四舍五入到万分位。",
      ],
      [
        "满意率",
        "4 分和 5 分的评价数 ÷ 评价数（区间结束前给出的 1–5 分评价）。由本页按评分分布计算，四舍五入到万分位，没有评价时显示“—”。",
      ],
    ],
    columns: [
      ["新建", (f) => count(f.created), "all"],
      ["取消", (f) => count(f.cancelled), "cancelled"],
      ["办结", (f) => count(f.completed), "completed"],
      ["办结率", (f) => percent(f.completion_rate), null],
      ["首次响应超时", (f) => count(f.sla.response_breaches), "responseBreach"],
      ["响应及时率", (f) => percent(derived(f).onTime), null],
      ["评价数", (f) => count(f.satisfaction.rated), "rated"],
      ["4–5分评价", (f) => count(derived(f).satisfied), null],
      ["满意率", (f) => percent(derived(f).satisfactionRate), null],
    ],
    chart: (rows, time) => ({
      type: time ? "line" : "bar",
      unit: "%",
      max: 100,
      datasets: [
        ["办结率", (f) => f.completion_rate],
        ["响应及时率", (f) => derived(f).onTime],
        ["满意率", (f) => derived(f).satisfactionRate],
      ].map(([label, value]) => ({
        label,
        data: rows.map((r) => (value(r.f) == null ? null : value(r.f) * 100)),
      })),
    }),
  },
  {
    id: "times",
    title: "首次响应与办结用时",
    formulas: [
      [
        "首次响应用时",
        "从新建到首次响应（第一次从“新建”变为取消以外的状态）的时间；只计区间结束前已响应的工单，包括之后取消的。",
      ],
      ["待首次响应", "未取消、到区间结束仍未首次响应的工单数。"],
      [
        "办结用时",
        "区间结束时已办结的工单，从新建到最后一次办结所计的时间：只计新建、已受理、处理中的时间，挂起的时间和重新打开前已办结的时间不计（与办结时限同一计时）。",
      ],
      [
        "中位数、P90",
        "最近秩法：n 个值从小到大排列，第 p 百分位是第 ⌈p ÷ 100 × n⌉ 个值（总是实际出现过的值；1、2、3、4 的中位数是 2）。没有值时显示“—”。",
      ],
    ],
    columns: [
      ["已响应", (f) => count(f.first_response_seconds.count), null],
      ["首次响应中位数", (f) => seconds(f.first_response_seconds.p50), null],
      ["首次响应P90", (f) => seconds(f.first_response_seconds.p90), null],
      ["待首次响应", (f) => count(f.awaiting_first_response), "awaiting"],
      ["已计办结用时", (f) => count(f.resolution_seconds.count), "completed"],
      ["办结用时中位数", (f) => seconds(f.resolution_seconds.p50), null],
      ["办结用时P90", (f) => seconds(f.resolution_seconds.p90), null],
    ],
    chart: (rows, time) => {
      const all = rows.flatMap((r) => [r.f.first_response_seconds.p90, r.f.resolution_seconds.p90]);
      const hours = Math.max(0, ...all.filter((v) => v != null)) >= 3 * 3600;
      const scale = hours ? 3600 : 60;
      return {
        type: time ? "line" : "bar",
        unit: hours ? "小时" : "分钟",
        datasets: [
          ["首次响应中位数", (f) => f.first_response_seconds.p50],
          ["首次响应P90", (f) => f.first_response_seconds.p90],
          ["办结用时中位数", (f) => f.resolution_seconds.p50],
          ["办结用时P90", (f) => f.resolution_seconds.p90],
        ].map(([label, value]) => ({
          label,
          data: rows.map((r) =>
            value(r.f) == null ? null : Math.round((value(r.f) / scale) * 10) / 10,
          ),
        })),
      };
    },
  },
  {
    id: "satisfaction",
    title: "居民评价",
    formulas: [
      ["评价数", "区间结束前居民给出的 1–5 分评价数。"],
      ["平均分", "评分之和 ÷ 评价数，四舍五入到小数点后两位；没有评价时显示“—”。"],
      ["评价率", "评价数 ÷ 办结，四舍五入到万分位；没有办结的工单时显示“—”。"],
      ["满意率", "4 分和 5 分的评价数 ÷ 评价数（由本页计算）。"],
    ],
    columns: [
      ...["1", "2", "3", "4", "5"].map((s) => [
        `${s}分`,
        (f) => count(f.satisfaction.distribution[s] ?? 0),
        null,
      ]),
      ["评价数", (f) => count(f.satisfaction.rated), "rated"],
      ["平均分", (f) => average(f.satisfaction.average), null],
      ["评价率", (f) => percent(f.satisfaction.rating_rate), null],
      ["满意率", (f) => percent(derived(f).satisfactionRate), null],
    ],
    chart: (rows) => ({
      type: "bar",
      stacked: true,
      unit: "条",
      datasets: ["1", "2", "3", "4", "5"].map((s, i) => ({
        label: `${s}分`,
        color: SCORE_COLORS[i],
        data: rows.map((r) => r.f.satisfaction.distribution[s] ?? 0),
      })),
    }),
  },
  {
    id: "volume",
    title: "工单量与超时",
    formulas: [
      ["新建", "统计区间内新建、符合条件的工单数。新建 = 取消 + 办结 + 未办结。"],
      ["未办结", "区间结束时仍为新建、已受理、处理中或挂起的工单数。"],
      [
        "重新打开",
        "区间结束前至少被重新打开（已办结 → 处理中）一次的工单数，不论区间结束时的状态。",
      ],
      [
        "首次响应超时、办理超时",
        "首次响应时限或办结时限在区间结束前被判定超时的工单数，包括之后取消或办结的。",
      ],
    ],
    columns: [
      ["新建", (f) => count(f.created), "all"],
      ["办结", (f) => count(f.completed), "completed"],
      ["未办结", (f) => count(f.open_at_end), "open"],
      ["取消", (f) => count(f.cancelled), "cancelled"],
      ["重新打开", (f) => count(f.reopened), null],
      ["首次响应超时", (f) => count(f.sla.response_breaches), "responseBreach"],
      ["办理超时", (f) => count(f.sla.resolution_breaches), "resolutionBreach"],
    ],
    chart: (rows) => ({
      type: "bar",
      stacked: true,
      unit: "张",
      datasets: [
        ["办结", (f) => f.completed, "status"],
        ["未办结", (f) => f.open_at_end, "status"],
        ["取消", (f) => f.cancelled, "status"],
        ["首次响应超时", (f) => f.sla.response_breaches, "sla"],
        ["办理超时", (f) => f.sla.resolution_breaches, "sla"],
      ].map(([label, value, stack]) => ({ label, stack, data: rows.map((r) => value(r.f)) })),
    }),
  },
];

/** The overall satisfaction distribution: its own chart and table. */
const DISTRIBUTION = {
  id: "distribution",
  title: "满意度分布（合计）",
  formulas: [["占比", "该分数的评价数 ÷ 评价数，四舍五入到万分位。"]],
};

function tableText(spec, rows) {
  const header = [GROUP_NAMES[report.group_by], ...spec.columns.map(([label]) => label)];
  const body = rows.map((row) => [row.label, ...spec.columns.map(([, cell]) => cell(row.f))]);
  return { header, body };
}

function distributionText() {
  const s = report.overall.satisfaction;
  return {
    header: ["评分", "评价数", "占比"],
    body: ["5", "4", "3", "2", "1"].map((score) => [
      `${score}分`,
      count(s.distribution[score] ?? 0),
      percent(ratio(s.distribution[score] ?? 0, s.rated)),
    ]),
  };
}

function csv(text) {
  const quote = (cell) => (/[",\r\n]/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell);
  const lines = [text.header, ...text.body].map((row) => row.map(quote).join(","));
  return `\uFEFF${lines.join("\r\n")}\r\n`;
}

function download(spec, text) {
  const period = `${applied.from}至${addDays(applied.to, -1)}`;
  const name = `邻里助手统计-${spec.title}-按${GROUP_NAMES[report.group_by]}-${period}.csv`;
  const url = URL.createObjectURL(new Blob([csv(text)], { type: "text/csv;charset=utf-8" }));
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  announce(announcer, `已导出“${spec.title}”表格。`);
}

function drillButton(
  row,
  label,
  value,
  kind,
  spoken = `${row.label} ${label} ${value}：查看这些工单`,
) {
  return h(
    "button",
    {
      type: "button",
      class: "stats-drill-button",
      "aria-label": spoken,
      onclick: () => openDrill(row, kind, label),
    },
    value,
  );
}

function tableOf(spec, rows, text) {
  const tbody = rows.map((row, i) =>
    h(
      "tr",
      { class: row.group ? "" : "stats-total", dataset: { key: row.key ?? "" } },
      h(
        "th",
        { scope: "row" },
        drillButton(row, "全部工单", row.label, "all", `${row.label}：查看全部工单`),
      ),
      spec.columns.map(([label, , kind], c) => {
        const value = text.body[i][c + 1];
        return h("td", {}, kind && value !== "0" ? drillButton(row, label, value, kind) : value);
      }),
    ),
  );
  return h(
    "table",
    { id: `s-table-${spec.id}`, class: "stats-table" },
    h("caption", {}, `${spec.title}（按${GROUP_NAMES[report.group_by]}）`),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        text.header.map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    h("tbody", {}, tbody),
  );
}

function distributionTable(text) {
  return h(
    "table",
    { id: "s-table-distribution", class: "stats-table" },
    h("caption", {}, DISTRIBUTION.title),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        text.header.map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    h(
      "tbody",
      {},
      text.body.map(([score, ...cells]) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, score),
          cells.map((c) => h("td", {}, c)),
        ),
      ),
    ),
  );
}

function formulaList(spec) {
  return h(
    "dl",
    { class: "stats-formulas" },
    spec.formulas.map(([term, text]) => [h("dt", {}, term), h("dd", {}, text)]),
  );
}

function section(spec, table, text) {
  const canvas = h("canvas", {
    id: `s-chart-${spec.id}`,
    role: "img",
    "aria-label": `${spec.title}图表。图中的数字都在旁边的表格里。`,
  });
  return h(
    "section",
    { class: "stats-section", id: `s-section-${spec.id}`, "aria-labelledby": `s-${spec.id}-h` },
    h("h2", { id: `s-${spec.id}-h` }, spec.title),
    formulaList(spec),
    h(
      "div",
      { class: "stats-pair" },
      h(
        "figure",
        { class: "stats-chart" },
        h("div", { class: "stats-canvas" }, canvas),
        h("figcaption", { class: "hint" }, "图表；数据见表格"),
      ),
      h(
        "div",
        { class: "stats-data" },
        h("div", { class: "table-wrap" }, table),
        h(
          "p",
          { class: "buttons" },
          h(
            "button",
            { type: "button", id: `s-csv-${spec.id}`, onclick: () => download(spec, text) },
            `导出“${spec.title}”CSV`,
          ),
        ),
      ),
    ),
  );
}

async function drawChart(id, config, labelsOnAxis) {
  const Chart = await chartLib;
  const canvas = document.getElementById(`s-chart-${id}`);
  if (!Chart || !canvas) {
    canvas?.replaceWith(h("p", { class: "hint" }, "图表组件没有加载，请看表格中的数据。"));
    return;
  }
  const reduced = matchMedia("(prefers-reduced-motion: reduce)").matches;
  charts.push(
    new Chart(canvas, {
      type: config.type,
      data: {
        labels: labelsOnAxis,
        datasets: config.datasets.map((d, i) => ({
          label: d.label,
          data: d.data,
          stack: d.stack,
          backgroundColor: d.color ?? COLORS[i % COLORS.length],
          borderColor: d.color ?? COLORS[i % COLORS.length],
          borderWidth: config.type === "line" ? 3 : 0,
          spanGaps: true,
        })),
      },
      options: {
        animation: reduced ? false : { duration: 300 },
        maintainAspectRatio: false,
        plugins: {
          legend: { labels: { font: { size: 16 } } },
          tooltip: {
            callbacks: {
              label: (item) => `${item.dataset.label}：${item.formattedValue}${config.unit}`,
            },
          },
        },
        scales: {
          x: { stacked: config.stacked },
          y: {
            stacked: config.stacked,
            beginAtZero: true,
            max: config.max,
            title: { display: true, text: config.unit },
            ticks: { precision: config.unit === "%" ? undefined : 0 },
          },
        },
      },
    }),
  );
}

function overviewItem(label, value, row, kind) {
  return h(
    "div",
    { class: "stats-card" },
    h("dt", {}, label),
    h("dd", {}, kind && value !== "0" ? drillButton(row, label, value, kind) : value),
  );
}

function showOverview(total) {
  const f = total.f;
  const d = derived(f);
  fill(
    overviewBox,
    overviewItem("新建工单", count(f.created), total, "all"),
    overviewItem("办结", count(f.completed), total, "completed"),
    overviewItem("办结率", percent(f.completion_rate)),
    overviewItem("响应及时率", percent(d.onTime)),
    overviewItem("满意率", percent(d.satisfactionRate)),
    overviewItem("平均评分", average(f.satisfaction.average)),
    overviewItem("首次响应中位数", seconds(f.first_response_seconds.p50)),
    overviewItem("办结用时中位数", seconds(f.resolution_seconds.p50)),
    overviewItem("首次响应超时", count(f.sla.response_breaches), total, "responseBreach"),
    overviewItem("办理超时", count(f.sla.resolution_breaches), total, "resolutionBreach"),
    overviewItem("未办结", count(f.open_at_end), total, "open"),
    overviewItem("待首次响应", count(f.awaiting_first_response), total, "awaiting"),
  );
}

function render() {
  for (const chart of charts.splice(0)) chart.destroy();
  const rows = rowsOf(report);
  showOverview(rows.at(-1));
  const time = TIME_GROUPS.has(report.group_by);
  const groups = rows.filter((r) => r.group);
  const sections = [];
  const draws = [];
  const distText = distributionText();
  sections.push(section(DISTRIBUTION, distributionTable(distText), distText));
  draws.push(() =>
    drawChart(
      "distribution",
      {
        type: "bar",
        unit: "条",
        datasets: [
          {
            label: "评价数",
            color: SCORE_COLORS,
            data: ["1", "2", "3", "4", "5"].map(
              (s) => report.overall.satisfaction.distribution[s] ?? 0,
            ),
          },
        ],
      },
      ["1分", "2分", "3分", "4分", "5分"],
    ),
  );
  for (const spec of TABLES) {
    const text = tableText(spec, rows);
    sections.push(section(spec, tableOf(spec, rows, text), text));
    draws.push(() =>
      drawChart(
        spec.id,
        spec.chart(groups, time),
        groups.map((r) => r.label),
      ),
    );
  }
  fill(sectionsBox, sections);
  if (report.group_by === "community") {
    const list = document.getElementById("s-community-list");
    const known = new Set([...list.options].map((o) => o.value));
    for (const g of report.groups)
      if (g.key && !known.has(g.key)) list.append(h("option", { value: g.key }));
  }
  return Promise.all(draws.map((draw) => draw()));
}

function describe(f) {
  const parts = [
    `统计区间：${chineseDate(f.from)} 至 ${chineseDate(addDays(f.to, -1))}（北京时间，含首尾两天）`,
  ];
  parts.push(f.community ? `社区：${f.community}` : "全部社区");
  parts.push(f.kind ? `类型：${kindLabel(f.kind)}` : "全部类型");
  parts.push(f.channel ? `渠道：${channelLabel(f.channel)}` : "全部渠道");
  parts.push(`按${GROUP_NAMES[f.group_by]}分组`);
  return parts.join("；");
}

async function load() {
  const f = readFilters();
  errorBox.textContent = "";
  for (const name of ["from", "until"]) field(name).removeAttribute("aria-invalid");
  const invalid = validate(f);
  if (invalid) {
    errorBox.textContent = invalid.message;
    field(invalid.field).setAttribute("aria-invalid", "true");
    field(invalid.field).focus();
    return;
  }
  history.replaceState(null, "", `${location.pathname}?${queryOf(f)}`);
  summary.textContent = "正在统计……";
  document.documentElement.dataset.stats = "loading";
  try {
    const stats = await api(`/stats?${queryOf(f)}`);
    report = stats;
    applied = f;
    closeDrill({ focus: false });
    await render();
    summary.textContent = `${describe(f)}。新建工单 ${stats.overall.created} 张。`;
    document.documentElement.dataset.stats = "ready";
  } catch (error) {
    errorBox.textContent = error.message;
    summary.textContent = "";
    document.documentElement.dataset.stats = "error";
  }
}

// --- drill-down: the orders behind a figure ----------------------------------------------------

const DRILL = {
  all: {},
  completed: { status: ["resolved", "closed"] },
  open: { status: OPEN },
  cancelled: { status: ["cancelled"] },
  awaiting: { status: ["new"] },
  responseBreach: { keep: (o) => o.sla.response_breached },
  resolutionBreach: { keep: (o) => o.sla.resolution_breached },
  rated: { keep: (o) => o.rating != null },
};
let drilling = null; // {q, keep, offset, shown}
let drillOpener = null; // the button that opened it: focus goes back there

function drillQuery(row, kind) {
  const q = new URLSearchParams({ created_from: row.start, created_to: row.end });
  for (const name of ["community", "kind", "channel"])
    if (applied[name]) q.set(name, applied[name]);
  let keep = DRILL[kind].keep ?? null;
  if (row.group && ["community", "kind", "channel"].includes(report.group_by)) {
    if (row.key == null) {
      const base = keep;
      keep = (o) => o[report.group_by] == null && (!base || base(o));
    } else q.set(report.group_by, row.key);
  }
  for (const s of DRILL[kind].status ?? []) q.append("status", s);
  return { q, keep };
}

function drillRow(o) {
  const sla = [
    o.sla.response_breached ? "首次响应超时" : null,
    o.sla.resolution_breached ? "办理超时" : null,
  ]
    .filter(Boolean)
    .join("、");
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, h("a", { href: `/console/orders?order=${o.id}` }, `#${o.id}`)),
    h("td", {}, kindLabel(o.kind)),
    h("td", {}, channelLabel(o.channel)),
    h("td", {}, o.community ?? "未关联居民"),
    h("td", {}, h("span", { class: `status status--${o.status}` }, statusLabel(o.status))),
    h("td", {}, formatTime(o.created_at)),
    h("td", {}, sla || "未超时"),
    h("td", {}, o.rating ? `${o.rating.score}分` : DASH),
  );
}

async function loadDrill() {
  const { q, keep } = drilling;
  const limit = keep ? CLIENT_FILTER_LIMIT : DRILL_PAGE;
  q.set("limit", String(limit));
  q.set("offset", String(drilling.offset));
  drillMore.hidden = true;
  try {
    const page = await api(`/work-orders?${q}`);
    const items = keep ? page.items.filter(keep) : page.items;
    drillBody.append(...items.map(drillRow));
    drilling.offset += page.items.length;
    drilling.shown += items.length;
    if (keep) {
      const partial = page.total > limit ? `（只检查了最新的 ${limit} 张，请缩小统计条件）` : "";
      drillSummary.textContent = `共 ${drilling.shown} 张${partial}。`;
    } else {
      drillSummary.textContent = `共 ${page.total} 张，已显示 ${drilling.shown} 张。`;
      drillMore.hidden = drilling.offset >= page.total;
    }
  } catch (error) {
    drillSummary.textContent = error.message;
  }
}

async function openDrill(row, kind, label) {
  drilling = { ...drillQuery(row, kind), offset: 0, shown: 0 };
  drillOpener = document.activeElement;
  drillBody.replaceChildren();
  document.getElementById("s-drill-h").textContent = `工单明细：${row.label} · ${label}`;
  drill.hidden = false;
  drillSummary.textContent = "正在加载……";
  drill.focus();
  await loadDrill();
}

function closeDrill({ focus = true } = {}) {
  drilling = null;
  drill.hidden = true;
  drillBody.replaceChildren();
  if (focus && drillOpener?.isConnected) drillOpener.focus();
  drillOpener = null;
}

// --- start -----------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
drillMore.addEventListener("click", () => loadDrill());
document.getElementById("s-drill-close").addEventListener("click", () => closeDrill());

buildFilters();
writeFilters(filtersFromUrl());
load();
