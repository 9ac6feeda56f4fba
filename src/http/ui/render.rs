//! The console's layout and the pieces pages share. Every value goes through maud's
//! escaping; nothing here marks text as raw HTML except the SVG the console draws itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::Ctx;
use crate::job::JobState;

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Jobs,
    Kinds,
    Queues,
    Schedules,
    Workflows,
}

impl Section {
    const ALL: [(Section, &'static str, &'static str, &'static str); 6] = [
        (Section::Overview, "overview", "", "Overview"),
        (Section::Jobs, "jobs", "/jobs", "Jobs"),
        (Section::Kinds, "kinds", "/kinds", "Kinds"),
        (Section::Queues, "queues", "/queues", "Queues"),
        (Section::Schedules, "schedules", "/schedules", "Schedules"),
        (Section::Workflows, "workflows", "/workflows", "Workflows"),
    ];
}

/// A whole page: head, navigation, the signed-in principal, and `body`.
pub(crate) fn layout(ctx: &Ctx, section: Section, title: &str, body: &Markup) -> Markup {
    let base = &ctx.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, title, true))
            body data-base=(base) {
                header.top {
                    a.brand href=(base) { "jobforge" }
                    nav #nav {
                        @for (s, key, path, label) in Section::ALL.into_iter()
                            .filter(|(s, ..)| *s != Section::Schedules || ctx.can_see_schedules) {
                            a data-nav=(key) href={ (base) (path) }
                                aria-current=[(s == section).then_some("page")] { (label) }
                        }
                    }
                    div.who {
                        @if let Some(who) = &ctx.who {
                            span.principal title="signed in as" { (who) }
                            @if !ctx.can_write { span.badge { "read only" } }
                            form #logout method="post" action={ (base) "/logout" } {
                                button #logout-button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page's head: its title, the style sheet and (for the console's pages) the script.
fn head(base: &str, title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · jobforge" }
            link rel="stylesheet" href={ (base) "/assets/app.css" };
            @if script { script src={ (base) "/assets/app.js" } defer {} }
        }
    }
}

/// The login form, with the reason a key was refused.
pub(crate) fn login(base: &str, next: Option<&str>, error: Option<&str>, open: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, "Log in", false))
            body.login {
                main.card {
                    h1 { "jobforge" }
                    @if open {
                        p { "This server checks no credentials: the console is open." }
                        p { a href=(base) { "Open the console" } }
                    } @else {
                        p { "Log in with an API key (or a bearer token) that has the "
                            code { "jobs:read" } " scope; " code { "jobs:write" }
                            " also allows cancelling and retrying jobs." }
                        @if let Some(error) = error { p.error role="alert" { (error) } }
                        form #login-form method="post" action={ (base) "/login" } {
                            label for="key" { "API key" }
                            input #key name="key" type="password" autocomplete="current-password"
                                required autofocus;
                            @if let Some(next) = next { input type="hidden" name="next" value=(next); }
                            button #login type="submit" { "Log in" }
                        }
                        p.hint { "The key is kept in an HttpOnly cookie for this console only, for 8 hours." }
                    }
                }
            }
        }
    }
}

/// A state as a coloured label.
pub(crate) fn state_badge(state: JobState) -> Markup {
    html! { span class={ "state state-" (state.as_str()) } { (state.as_str()) } }
}

/// A time as `2026-12-05 06:01:02 UTC`, with the full RFC 3339 value as its title.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time, or a dash.
pub(crate) fn opt_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { "–" },
    }
}

/// A duration in the unit that reads best.
pub(crate) fn duration(d: Option<Duration>) -> String {
    match d {
        None => "–".to_owned(),
        Some(d) if d < Duration::from_millis(1) => format!("{} µs", d.as_micros()),
        Some(d) if d < Duration::from_secs(1) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
    }
}

/// A fraction as a percentage.
pub(crate) fn percent(f: Option<f64>) -> String {
    f.map_or_else(|| "–".to_owned(), |f| format!("{:.1}%", f * 100.0))
}

/// A page's title line.
pub(crate) fn heading(title: &str, sub: Option<&str>) -> Markup {
    html! {
        div.heading {
            h1 { (title) }
            @if let Some(sub) = sub { p.sub { (sub) } }
        }
    }
}

/// What a page shows when the store could not answer.
pub(crate) fn failure(what: &str, err: &crate::Error) -> Markup {
    html! {
        p.error role="alert" { "Could not read " (what) ": " (err.to_string()) }
    }
}
