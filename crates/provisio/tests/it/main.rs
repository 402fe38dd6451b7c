//! provisio's integration tests: one binary, each test with its own server on a
//! random port and its own data directory, driven over real HTTP.

mod helpers;
mod openapi;
mod receiver;

mod api_auth;
mod api_event_types;
mod api_handlers;
mod before;
mod binary;
mod browser;
mod chaos;
mod cli;
mod cli_ui;
mod conflation;
mod delivery;
mod emit;
mod examples;
mod executions;
mod filters;
mod full_disk;
mod hardening_inp;
mod hardening_srv;
mod head_of_line;
mod health;
mod log_views;
mod pace;
mod pause;
mod postgres;
mod postgres_input;
mod postgres_outage;
mod replay;
mod replay_ui;
mod retention;
mod scripts;
mod scripts_descendants;
mod stopping;
mod telemetry;
mod templates;
mod web;
mod web_ui;
